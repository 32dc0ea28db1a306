# Hostile answers for each Action of the conversation family: failure
# lists of the wrong type, entries with missing or extra fields, a
# SetConvMark FailList whose inner lists are missing or not arrays, a List
# of the wrong type, a MsgId beyond bigint, Next values that are not
# cursors, media bodies that are not URL-encoded JSON, and seeded random
# mutations of valid answers.  Every call ends in success or one of the
# contract's SQLSTATEs, in bounded time, and no backend crashes.  Then the
# same through the queue (issue 17), for each Action that can be queued:
# every job ends in a recorded outcome, within zim_pin.job_max_attempts,
# sent by the worker or by zim_pin_run_jobs, neither of which crashes.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use MIME::Base64 qw(encode_base64);
use PostgreSQL::Test::Utils;
use Test::More;
use ZimTest;

my $node = zim_node('ffuzz', conf => <<'CONF');
zim_pin.timeout_ms = 1500
zim_pin.worker_database = 'postgres'
zim_pin.job_max_attempts = 3
zim_pin.max_retries = 0
CONF
$node->safe_psql('postgres', q{SELECT double('Reset')});
is($node->safe_psql('postgres', q{SELECT register('p1', 'p2')}), '0', 'users registered');
$node->safe_psql('postgres', q{SELECT double('Seed', '{"Groups": {"g1": ["p1", "p2"]}}')});

my $seed = $ENV{ZIM_FUZZ_SEED} || int(rand(1_000_000));
srand($seed);
note "ZIM_FUZZ_SEED=$seed";

my $ok = '"Code":0,"Message":"success","RequestId":"r1"';
my $msg = '{"Sender":"p1","MsgType":11,"SubMsgType":0,"MsgBody":"%7B%22FileName%22%3A%22a%20b%22%7D","MsgId":971503777289036700,"MsgSeq":1,"Payload":"","MsgTime":1700000000000,"IsEmpty":0}';
# per Action: the call, and answers (valid first, then hostile by hand)
my %actions = (
	SilenceConvNotification => [q{SELECT count(*) FROM zim_silence_conv_notification('p1', ARRAY['g1', 'g2'], 2, true)},
		qq({$ok,"ErrorList":[{"ConvId":"g2","SubCode":660600001,"SubMessage":"no group"}]}),
		qq({"Code":660600001,"Message":"x","RequestId":"r","ErrorList":[{"ConvId":"g1","SubCode":660800051},{"ConvId":"g2","SubCode":660600001}]}),
		qq({$ok,"ErrorList":{}}), qq({$ok,"ErrorList":[1,"x",null]}), qq({$ok,"ErrorList":[{"SubCode":1}]}),
		qq({$ok,"ErrorList":[{"ConvId":5,"SubCode":1}]}), qq({$ok,"ErrorList":[{"ConvId":"g1","SubCode":"1"}]}),
		qq({$ok,"ErrorList":[{"ConvId":"g1","SubCode":1,"SubMessage":7,"Extra":[1,{}]}]})],
	SetConvMark => [q{SELECT count(*) FROM zim_set_conv_mark('p1', ARRAY['g1', 'p2'], ARRAY[2, 0], 3, true)},
		qq({$ok,"FailList":[{"SubCode":0,"UserId":"p1","FailList":[{"Code":1,"Message":"bad","ConvId":"g1","ConvType":2}]}]}),
		qq({"Code":660800054,"Message":"x","RequestId":"r","FailList":[{"SubCode":1,"SubMessage":"user not exist","UserId":"p1"}]}),
		qq({$ok,"FailList":{}}), qq({$ok,"FailList":[{"SubCode":0,"UserId":"p1","FailList":{}}]}),
		qq({$ok,"FailList":[{"SubCode":0,"UserId":"p1","FailList":"x"}]}), qq({$ok,"FailList":[{"SubCode":0,"UserId":"p1"}]}),
		qq({$ok,"FailList":[{"SubCode":"a"}]}), qq({$ok,"FailList":[7]}),
		qq({$ok,"FailList":[{"SubCode":0,"FailList":[{"Code":1,"ConvId":"g1"}]}]}),
		qq({$ok,"FailList":[{"SubCode":0,"FailList":[{"Code":1,"ConvId":"g1","ConvType":5,"Message":null,"X":1}]}]})],
	DeleteConv => [q{SELECT count(*) FROM zim_delete_conv('p1', ARRAY['g1'], 2)},
		qq({$ok}), q({"Code":660800002,"Message":"no","RequestId":"r"}), qq({$ok,"ErrorList":[{"ConvId":"g1"}]}),
		q({"Code":660600001,"Message":"no group","RequestId":"r","Extra":{"a":[]}})],
	ClearConversationUnread => [q{SELECT count(*) FROM zim_clear_conversation_unread('p1', ARRAY['g1'], 2)},
		qq({$ok}), q({"Code":660800002,"Message":"no","RequestId":"r"}), qq({$ok,"FailList":[1]})],
	QueryConversationList => [q{SELECT count(*) FROM zim_query_conversation_list('p1', 10)},
		qq({$ok,"TotalCount":2,"Next":0,"List":[{"ConvId":"p2","UpdateTime":1700000000000},{"ConvId":"g1","ConvType":2,"UpdateTime":1700000000001}]}),
		qq({$ok,"Next":0,"List":{}}), qq({$ok,"Next":0,"List":"x"}), qq({$ok,"Next":0,"List":[1,null]}),
		qq({$ok,"Next":0,"List":[{"ConvId":"p2","ConvType":"0"}]}), qq({$ok,"Next":0,"List":[{"ConvId":"p2","UpdateTime":1e300}]}),
		qq({$ok,"Next":0,"List":[{"ConvId":"p2","UpdateTime":-99999999999999999}]}),
		qq({$ok,"Next":-1,"List":[{"ConvId":"p2"}]}), qq({$ok,"Next":"abc","List":[{"ConvId":"p2"}]}),
		qq({$ok,"Next":1e30,"List":[{"ConvId":"p2"}]}), qq({$ok,"Next":5,"List":[]})],
	QueryPeerMsg => [q{SELECT count(*) FROM zim_query_peer_msg('p1', 'p2', 10)},
		qq({$ok,"Next":0,"List":[$msg]}),
		qq({$ok,"Next":0,"List":[{"Sender":"p1","MsgType":1,"MsgId":99999999999999999999,"MsgSeq":1,"MsgTime":1}]}),
		qq({$ok,"Next":0,"List":[{"Sender":"p1","MsgType":11,"MsgBody":"%ZZ%7B%22a","MsgId":1,"MsgSeq":1,"MsgTime":1}]}),
		qq({$ok,"Next":0,"List":[{"Sender":"p1","MsgType":12,"MsgBody":"not json at all","MsgId":1,"MsgSeq":1,"MsgTime":1}]}),
		qq({$ok,"Next":0,"List":[{"Sender":"p1","MsgType":13,"MsgBody":"%00%7B%7D","MsgId":1,"MsgSeq":1,"MsgTime":1}]}),
		qq({$ok,"Next":0,"List":[{"Sender":"p1","MsgType":14,"MsgBody":"%5B%5B%5B%5B%5B","MsgId":1,"MsgSeq":1,"MsgTime":1}]}),
		qq({$ok,"Next":0,"List":[{"Sender":7,"MsgType":1,"MsgId":1,"MsgSeq":1,"MsgTime":1}]}),
		qq({$ok,"Next":0,"List":[{"MsgType":1,"MsgId":"1","MsgSeq":1,"MsgTime":1}]}), qq({$ok,"Next":0,"List":{}})],
	QueryGroupMsg => [q{SELECT count(*) FROM zim_query_group_msg('g1', 10)},
		qq({$ok,"Next":0,"List":[$msg]}), qq({$ok,"Next":0,"List":[{"MsgId":-1}]}),
		qq({$ok,"Next":7,"List":[$msg]}), q({"Code":660600001,"Message":"no group","RequestId":"r"})],
);

my @atoms = ('{', '}', '[', ']', '"', ':', ',', '\\', '\\u0000', '\\ud800', "\x00", "\xff", "\xc3",
	'1e999999', '9' x 400, 'null', 'true', '-', '"List"', '"FailList"', '"ErrorList"', '"Next"',
	'"MsgId"', '%', '[' x 3000, ' ' x 500);

sub mutate
{
	my ($s) = @_;
	for (1 .. 1 + int(rand(3)))
	{
		my $at = int(rand(length($s) + 1));
		my $op = int(rand(5));
		if ($op == 0) { substr($s, $at, 1, chr(int(rand(256)))) if $at < length $s; }
		elsif ($op == 1) { substr($s, $at, 1 + int(rand(8)), ''); }
		elsif ($op == 2) { substr($s, $at, 0, $atoms[ int(rand(@atoms)) ]); }
		elsif ($op == 3) { $s = substr($s, 0, $at); }
		else { my $len = int(rand(40)); substr($s, $at, 0, substr($s, int(rand(length $s)), $len)); }
	}
	return $s;
}

$node->safe_psql('postgres', q{
	CREATE TABLE fuzz (action text, i int, state text, ms float8);
	CREATE FUNCTION fuzz_one(action text, i int, call text, data text) RETURNS void LANGUAGE plpgsql AS $$
	DECLARE t0 timestamptz := clock_timestamp(); st text := 'ok';
	BEGIN
		PERFORM double('Fault', '{"Fault": "clear"}');
		PERFORM double('Fault', jsonb_build_object('Fault', 'body', 'Action', action, 'Body', data, 'Base64', true));
		BEGIN
			EXECUTE call;
		EXCEPTION WHEN OTHERS THEN
			GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE;
		END;
		INSERT INTO fuzz VALUES (action, i, st, extract(epoch FROM clock_timestamp() - t0) * 1000);
	END $$;
});

my $n_mutations = $ENV{ZIM_FUZZ_CASES} ? int($ENV{ZIM_FUZZ_CASES} / 7) : 30;
my $cases = 0;
for my $action (sort keys %actions)
{
	my ($call, @answers) = @{ $actions{$action} };
	my @valid = @answers[ 0 .. 1 ];
	push @answers, map { mutate($valid[ int(rand(@valid)) ]) } 1 .. $n_mutations;
	my $sql = "SET zim_pin.max_retries = 0; SET client_min_messages = warning;\n";
	for my $i (0 .. $#answers)
	{
		my $b64 = encode_base64($answers[$i], '');
		(my $c = $call) =~ s/'/''/g;
		$sql .= "SELECT fuzz_one('$action', $i, '$c', '$b64');\n";
		$cases++;
	}
	my ($ret, $out, $err) = $node->psql('postgres', $sql, on_error_stop => 0);
	is($err, '', "$action: " . scalar(@answers) . ' hostile answers in one session');
}
my $allowed = q{('ok', '08001', '08006', 'ZP001', 'ZP002', 'ZP003', 'ZP004', 'ZP005')};
is($node->safe_psql('postgres', "SELECT count(*) FROM fuzz"), $cases, "all $cases cases ran");
is($node->safe_psql('postgres', "SELECT count(*) FROM fuzz WHERE state NOT IN $allowed"), '0',
	'each ended in success or one of the contract\'s SQLSTATEs')
	or diag $node->safe_psql('postgres', "SELECT action, i, state FROM fuzz WHERE state NOT IN $allowed LIMIT 10");
note $node->safe_psql('postgres', q{SELECT string_agg(action || ' ' || state || ': ' || n, ', ') FROM
	(SELECT action, state, count(*) n FROM fuzz GROUP BY 1, 2 ORDER BY 1, 2) s});
is($node->safe_psql('postgres', q{SELECT string_agg(action, ',' ORDER BY action) FROM fuzz WHERE i = 0 AND state = 'ok'}),
	join(',', sort keys %actions), 'the valid answers succeeded');
is($node->safe_psql('postgres', q{SELECT count(*) FROM fuzz WHERE action = 'QueryPeerMsg' AND i = 1 AND state = 'ZP005'}), '1',
	'a MsgId beyond bigint is an invalid answer (ZP005)');
cmp_ok($node->safe_psql('postgres', q{SELECT max(ms) FROM fuzz}), '<', 5000, '... each within a bounded time');
cmp_ok($node->safe_psql('postgres', q{SELECT count(DISTINCT state) FROM fuzz}), '>=', 3, '... and the cases reached several outcomes');
# --- through the queue (issue 17) ---------------------------------------------
# Each case is one job of a user of its own (fq<n>x), whose first request
# gets the case's answer (a fault matched on the user id): valid, hostile
# by hand, or mutated.  In "postgres" the worker sends them, in "fuzzr"
# zim_pin_run_jobs.  A transient outcome is retried against the double's
# own answer, at most zim_pin.job_max_attempts (3) attempts of one request
# each (zim_pin.max_retries is 0).  Every other mutated case queues a
# second job of the same user and Action behind it, merged with it into
# the same group (two requests, or for a clear one), so a hostile answer
# meets a merged group's verdicts: the other request gets the double's own.
my %queued = (
	SilenceConvNotification => q{zim_silence_conv_notification_enqueue('USER', ARRAY['g1', 'g2'], 2, true)},
	SetConvMark => q{zim_set_conv_mark_enqueue('USER', ARRAY['g1', 'p2'], ARRAY[2, 0], 3, true)},
	DeleteConv => q{zim_delete_conv_enqueue('USER', ARRAY['g1'], 2)},
	ClearConversationUnread => q{zim_clear_conversation_unread_enqueue('USER', ARRAY['g1'], ARRAY[2])},
);
my %second = (
	SilenceConvNotification => q{zim_silence_conv_notification_enqueue('USER', ARRAY['g3'], ARRAY[2], false)},
	SetConvMark => q{zim_set_conv_mark_enqueue('USER', ARRAY['g1'], 2, 4, false)},
	DeleteConv => q{zim_delete_conv_enqueue('USER', ARRAY['g1', 'g9'], ARRAY[2, 2])},
	ClearConversationUnread => q{zim_clear_conversation_unread_enqueue('USER', ARRAY['g1'], 2)},
);
$node->safe_psql('postgres', q{CREATE DATABASE fuzzr});
$node->safe_psql($_, q{CREATE EXTENSION IF NOT EXISTS zim_pin; CREATE TABLE fuzzq (usr text, action text, i int, jobs int)})
	for 'postgres', 'fuzzr';
my $n_queue = $ENV{ZIM_FUZZ_CASES} ? int($ENV{ZIM_FUZZ_CASES} / 16) : 12;
my ($faults, $users) = ('', 0);
my %jobs_sql = (postgres => "BEGIN;\n", fuzzr => "BEGIN;\n");
for my $db ('postgres', 'fuzzr')
{
	for my $action (sort keys %queued)
	{
		my ($call, @answers) = @{ $actions{$action} };
		my $first = $users + 1;
		my @cases = map { [ $_, $answers[$_], 1 ] } 0 .. $#answers;
		push @cases, map { [ scalar(@answers) + $_ - 1, undef, 1 ] } 1 .. $n_queue;
		# case -1: "try again", so the job waits for a retry
		my $list = $action eq 'SetConvMark' ? ',"FailList":[]' : $action eq 'SilenceConvNotification' ? ',"ErrorList":[]' : '';
		push @cases, [ -1, qq({"Code":660000001,"Message":"try again","RequestId":"r"$list}), 1 ];
		for my $case (@cases)
		{
			my ($i, $answer, $count) = @$case;
			my $user = 'fq' . ++$users . 'x';
			# the answers name p1 as the user: name this case's user
			my @valid = map { s/"p1"/"$user"/gr } @answers[ 0 .. 1 ];
			$answer = defined $answer ? $answer =~ s/"p1"/"$user"/gr : mutate($valid[ int(rand(@valid)) ]);
			my $b64 = encode_base64($answer, '');
			$faults .= "SELECT double('Fault', jsonb_build_object('Fault', 'body', 'Count', $count, 'Action', '$action', 'Match', '$user', 'Body', '$b64', 'Base64', true));\n";
			my $merged = $i >= @answers && $i % 2;
			$jobs_sql{$db} .= "INSERT INTO fuzzq VALUES ('$user', '$action', $i, " . ($merged ? 2 : 1) . "); SELECT "
			  . ($queued{$action} =~ s/USER/$user/r) . ";\n";
			$jobs_sql{$db} .= 'SELECT ' . ($second{$action} =~ s/USER/$user/r) . ";\n" if $merged;
		}
	}
	$jobs_sql{$db} .= "COMMIT;\n";
}
for (my $from = 1; $from <= $users; $from += 100)
{
	my $to = $from + 99 > $users ? $users : $from + 99;
	$node->safe_psql('postgres', qq{SELECT register(VARIADIC ARRAY(SELECT 'fq' || i || 'x' FROM generate_series($from, $to) i))});
}
$node->safe_psql('postgres', q{SELECT double('Fault', '{"Fault": "clear"}')});
my ($ret, $out, $err) = $node->psql('postgres', $faults, on_error_stop => 0);
is($err, '', "$users hostile first answers set up, one for each job's user");
for my $db ('postgres', 'fuzzr')
{
	($ret, $out, $err) = $node->psql($db, $jobs_sql{$db}, on_error_stop => 0);
	is($err, '', "$db: a job for each of them queued");
}
my $pending = q{SELECT count(*) FROM zim_pin_job WHERE state = 'pending'};
my $t0 = time();
my ($drained, $run_errors) = (0, '');
while (time() - $t0 < 180)
{
	# zim_pin_run_jobs may warn about a job, never fail its caller
	my ($r, $o, $e) = $node->psql('fuzzr', q{SELECT zim_pin_run_jobs()}, on_error_stop => 0);
	$run_errors .= $e if $r != 0 || $e =~ /ERROR|FATAL|PANIC|server closed/;
	if ($node->safe_psql('postgres', $pending) eq '0' && $node->safe_psql('fuzzr', $pending) eq '0')
	{
		$drained = 1;
		last;
	}
	sleep 1;
}
ok($drained, sprintf('every queued job finished (%.0f s): none loops', time() - $t0));
is($run_errors, '', 'zim_pin_run_jobs never failed its caller');
for my $db ('postgres', 'fuzzr')
{
	my $who = $db eq 'postgres' ? 'the worker' : 'zim_pin_run_jobs';
	is($node->safe_psql($db, q{SELECT count(*) FROM fuzzq q JOIN zim_pin_job j ON j.from_user_id = q.usr AND j.action = q.action}),
		$node->safe_psql($db, q{SELECT sum(jobs) FROM fuzzq}), "$who: each case is one job of its Action (two where merged)");
	cmp_ok($node->safe_psql($db, q{SELECT count(*) FROM fuzzq WHERE jobs = 2}), '>=', 8, "$who: ... some of them merged");
	is($node->safe_psql($db, q{SELECT count(*) FROM zim_pin_job j JOIN fuzzq q ON q.usr = j.from_user_id
		WHERE j.state NOT IN ('done', 'failed') OR j.attempts NOT BETWEEN 1 AND 3 OR j.last_message IS NULL OR j.finished_at IS NULL}),
		'0', "$who: each ended done or failed, after 1 to 3 attempts, with its outcome recorded")
		or diag $node->safe_psql($db, q{SELECT string_agg(q.action || ' ' || q.i || ' ' || j.state || ' ' || j.attempts || ' ' || coalesce(j.last_message, '-'), E'\n')
			FROM zim_pin_job j JOIN fuzzq q ON q.usr = j.from_user_id WHERE j.state NOT IN ('done', 'failed') OR j.attempts NOT BETWEEN 1 AND 3});
	# a failed job has failure rows (what replay reads), each one of its own
	# conversations, once (a conversation whose request succeeded has none)
	is($node->safe_psql($db, q{SELECT count(*) FROM zim_pin_job j JOIN fuzzq q ON q.usr = j.from_user_id
		WHERE j.state = 'failed' AND NOT EXISTS (SELECT 1 FROM zim_pin_job_failure f WHERE f.job_id = j.job_id)}),
		'0', "$who: each failed job has failure rows");
	is($node->safe_psql($db, q{SELECT count(*) FROM zim_pin_job j JOIN fuzzq q ON q.usr = j.from_user_id
		JOIN zim_pin_job_failure f ON f.job_id = j.job_id
		WHERE (f.conv_id, f.conv_type) NOT IN (SELECT * FROM unnest(j.conv_ids, j.conv_types))
		   OR (SELECT count(*) FROM zim_pin_job_failure g WHERE g.job_id = f.job_id AND g.conv_id = f.conv_id AND g.conv_type = f.conv_type) > 1}),
		'0', "$who: ... each row one of the job's conversations, once");
	# the valid answers (0 and 1): done at once, their failures as rows
	is($node->safe_psql($db, q{SELECT string_agg(q.action || ' ' || q.i || ' ' || j.state || ' ' || j.attempts || ' '
			|| coalesce((SELECT string_agg(f.conv_id || ':' || f.sub_code, ',' ORDER BY f.conv_id) FROM zim_pin_job_failure f WHERE f.job_id = j.job_id), '-'),
			', ' ORDER BY q.action, q.i)
		FROM fuzzq q JOIN zim_pin_job j ON j.from_user_id = q.usr WHERE q.i IN (0, 1)}),
		'ClearConversationUnread 0 done 1 -, ClearConversationUnread 1 done 1 g1:660800002, '
		. 'DeleteConv 0 done 1 -, DeleteConv 1 done 1 g1:660800002, '
		. 'SetConvMark 0 done 1 g1:1, SetConvMark 1 done 1 g1:1,p2:1, '
		. 'SilenceConvNotification 0 done 1 g2:660600001, SilenceConvNotification 1 done 1 g2:660600001',
		"$who: the valid answers are read as the synchronous calls read them");
	is($node->safe_psql($db, q{SELECT string_agg(q.action || ' ' || j.state || ' ' || j.attempts, ', ' ORDER BY q.action)
		FROM fuzzq q JOIN zim_pin_job j ON j.from_user_id = q.usr WHERE q.i = -1}),
		'ClearConversationUnread done 2, DeleteConv done 2, SetConvMark done 2, SilenceConvNotification done 2',
		"$who: a job whose first attempt was answered \"try again\" waited for a retry, then was done");
	note $node->safe_psql($db, q{SELECT string_agg(action || ' ' || state || ': ' || n, ', ') FROM
		(SELECT j.action, j.state, count(*) n FROM zim_pin_job j JOIN fuzzq q ON q.usr = j.from_user_id GROUP BY 1, 2 ORDER BY 1, 2) s});
}
# at most 3 attempts of a job's requests: 3 a case, 6 for a merged case
my $jobs_of = join(', ', map { $node->safe_psql($_, q{SELECT string_agg(format('(%L, %s)', usr, jobs), ', ') FROM fuzzq}) } 'postgres', 'fuzzr');
is($node->safe_psql('postgres', qq{SELECT count(*) FROM (SELECT r->>'User' AS usr, count(*) AS n FROM jsonb_array_elements(double('State')->'Requests') r
	WHERE r->>'User' ~ '^fq[0-9]+x\$' GROUP BY 1) s JOIN (VALUES $jobs_of) c(usr, jobs) USING (usr) WHERE s.n > 3 * c.jobs}),
	'0', 'no job was sent more than 3 times (zim_pin.job_max_attempts)');
ok(!$node->log_contains(qr/background worker "zim_pin worker" \(PID \d+\) exited with exit code [1-9]/),
	'the worker never exited with an error');

# a normal job of each Action still goes through, in both (of users of
# their own: p1 keeps no conversation)
$node->safe_psql('postgres', q{SELECT double('Fault', '{"Fault": "clear"}'); SELECT register('fn1', 'fn2')});
for my $db ('postgres', 'fuzzr')
{
	my ($u, $peer) = $db eq 'postgres' ? ('fn1', 'fn2') : ('fn2', 'fn1');
	my $last = $node->safe_psql($db, q{SELECT max(job_id) FROM zim_pin_job});
	$node->safe_psql($db, qq{
		SELECT zim_silence_conv_notification_enqueue('$u', ARRAY['$peer'], 0, true);
		SELECT zim_set_conv_mark_enqueue('$u', ARRAY['$peer'], 0, 5, true);
		SELECT zim_clear_conversation_unread_enqueue('$u', ARRAY['$peer'], 0);
		SELECT zim_delete_conv_enqueue('$u', ARRAY['g1'], 2);
		SELECT zim_conv_pinned_enqueue('$u', ARRAY['$peer'], 0, true);
	});
	my $ok = 0;
	for (1 .. 60)
	{
		$node->safe_psql($db, q{SELECT zim_pin_run_jobs()}) if $db eq 'fuzzr';
		$ok = 1, last if $node->safe_psql($db, $pending) eq '0';
		sleep 1;
	}
	ok($ok, "$db: a later job of each Action was sent");
	is($node->safe_psql($db, qq{SELECT string_agg(action || ' ' || state || ' ' || attempts, ', ' ORDER BY job_id) FROM zim_pin_job WHERE job_id > $last}),
		'SilenceConvNotification done 1, SetConvMark done 1, ClearConversationUnread done 1, DeleteConv done 1, ConvPinned done 1',
		"$db: ... and done at once");
	is($node->safe_psql('postgres', qq{SELECT (s->'Mutes')::text || ' ' || (s->'Marks')::text || ' ' || (s->'Pins')::text FROM double('State', '{"UserId": "$u"}') s}),
		qq([{"ConvId": "$peer", "ConvType": 0}] [{"Marks": [5], "ConvId": "$peer", "ConvType": 0}] [{"ConvId": "$peer", "ConvType": 0}]),
		"$db: ... with their effect on the double");
}

ok(!$node->log_contains('terminated by signal'), 'no backend crashed');
$node->safe_psql('postgres', q{SELECT double('Fault', '{"Fault": "clear"}')});
is($node->safe_psql('postgres', q{SELECT count(*) FROM zim_query_conversation_list('p1')}), '0', 'the server keeps working');
$node->stop;
done_testing();
