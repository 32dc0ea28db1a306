# Hardening (issue 7): the worker and zim_pin_run_jobs run none of a
# database owner's code; cancelled calls give their send times back; the
# documented Actions keep their slots; hostile answers end in the
# contract's SQLSTATEs; the secret file works with preloading too.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use ZimTest;

my $node = zim_node('hard', conf => <<'CONF');
zim_pin.worker_database = 'victim'
zim_pin.job_retention = '1min'
CONF
$node->safe_psql('postgres', q{SELECT double('Reset'); SELECT register('h_a', 'h_b', 'h_c', 'h_d')});

# --- 1. a database owner cannot capture the superuser worker ----------------
# mallory owns two databases: the worker drains "victim", zim_pin_run_jobs
# (called by her) drains "victim2".  In each she plants look-alikes of what
# the queue's statements use, in the schema she owns, first on the
# database's search_path.
$node->safe_psql('postgres', q{CREATE ROLE mallory LOGIN});
sub plant
{
	my ($db) = @_;
	$node->safe_psql('postgres', qq{CREATE DATABASE $db OWNER mallory});
	$node->safe_psql($db, q{CREATE EXTENSION zim_pin;
		GRANT EXECUTE ON FUNCTION zim_pin_run_jobs(integer) TO mallory;
		GRANT EXECUTE ON FUNCTION zim_conv_pinned_enqueue(text, text[], integer, boolean) TO mallory;
		GRANT EXECUTE ON FUNCTION zim_silence_conv_notification_enqueue(text, text[], integer, boolean),
			zim_silence_conv_notification_enqueue(text, text[], integer[], boolean),
			zim_set_conv_mark_enqueue(text, text[], integer, integer, boolean),
			zim_set_conv_mark_enqueue(text, text[], integer[], integer, boolean),
			zim_clear_conversation_unread_enqueue(text, text[], integer),
			zim_clear_conversation_unread_enqueue(text, text[], integer[]),
			zim_delete_conv_enqueue(text, text[], integer),
			zim_delete_conv_enqueue(text, text[], integer[]) TO mallory});
	$node->safe_psql($db, q{
		CREATE TABLE public.captured (fn text, usr text, super boolean);
		GRANT INSERT ON public.captured TO PUBLIC;
		CREATE FUNCTION public.note(fn text) RETURNS void LANGUAGE sql AS
			$$ INSERT INTO public.captured SELECT fn, current_user, rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user $$;
		CREATE FUNCTION public.clock_timestamp() RETURNS timestamptz LANGUAGE sql AS
			$$ SELECT public.note('clock_timestamp'); SELECT pg_catalog.clock_timestamp() $$;
		CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE sql AS
			$$ SELECT public.note('now'); SELECT pg_catalog.now() $$;
		CREATE FUNCTION public.min(timestamptz) RETURNS timestamptz LANGUAGE sql AS
			$$ SELECT public.note('min'); SELECT $1 $$;
		CREATE FUNCTION public.mul(integer, interval) RETURNS interval LANGUAGE sql AS
			$$ SELECT public.note('int*interval'); SELECT $1::float8 * $2 $$;
		CREATE OPERATOR public.* (LEFTARG = integer, RIGHTARG = interval, FUNCTION = public.mul);
		CREATE FUNCTION public.mul8(bigint, interval) RETURNS interval LANGUAGE sql AS
			$$ SELECT public.note('bigint*interval'); SELECT $1::float8 * $2 $$;
		CREATE OPERATOR public.* (LEFTARG = bigint, RIGHTARG = interval, FUNCTION = public.mul8);
		CREATE FUNCTION public.teq(text, text) RETURNS boolean LANGUAGE sql AS
			$$ SELECT public.note('text=text'); SELECT $1 OPERATOR(pg_catalog.=) $2 $$;
		CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text, FUNCTION = public.teq);
		CREATE FUNCTION public.tle(timestamptz, timestamptz) RETURNS boolean LANGUAGE sql AS
			$$ SELECT public.note('timestamptz<=timestamptz'); SELECT $1 OPERATOR(pg_catalog.<=) $2 $$;
		CREATE OPERATOR public.<= (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = public.tle);
		-- for the queue of every Action (issue 17): closer matches than
		-- pg_catalog's polymorphic functions, which win even after it
		CREATE FUNCTION public.cardinality(text[]) RETURNS integer LANGUAGE sql AS
			$$ SELECT public.note('cardinality(text[])'); SELECT pg_catalog.cardinality($1) $$;
		CREATE FUNCTION public.array_position(text[], text) RETURNS integer LANGUAGE sql AS
			$$ SELECT public.note('array_position(text[], text)'); SELECT pg_catalog.array_position($1, $2) $$;
		CREATE FUNCTION public.unnest(text[]) RETURNS SETOF text LANGUAGE sql AS
			$$ SELECT public.note('unnest(text[])'); SELECT pg_catalog.unnest($1) $$;
		CREATE FUNCTION public.unnest(integer[]) RETURNS SETOF integer LANGUAGE sql AS
			$$ SELECT public.note('unnest(integer[])'); SELECT pg_catalog.unnest($1) $$;
		CREATE FUNCTION public.ieq(integer, integer) RETURNS boolean LANGUAGE sql AS
			$$ SELECT public.note('integer=integer'); SELECT $1 OPERATOR(pg_catalog.=) $2 $$;
		CREATE OPERATOR public.= (LEFTARG = integer, RIGHTARG = integer, FUNCTION = public.ieq);
		CREATE FUNCTION public.beq(boolean, boolean) RETURNS boolean LANGUAGE sql AS
			$$ SELECT public.note('boolean=boolean'); SELECT $1 OPERATOR(pg_catalog.=) $2 $$;
		CREATE OPERATOR public.= (LEFTARG = boolean, RIGHTARG = boolean, FUNCTION = public.beq);
	}, extra_params => ['-U', 'mallory']);
	$node->safe_psql($db, qq{ALTER DATABASE $db SET search_path = public, pg_catalog}, extra_params => ['-U', 'mallory']);
	# an old finished job, for housekeeping
	vq($db, q{INSERT INTO public.zim_pin_job (from_user_id, conv_ids, conv_types, pinned, state, finished_at)
		VALUES ('h_a', '{old}', '{2}', true, 'done', pg_catalog.now() - interval '2 days')});
}
# the test's own queries in those databases put pg_catalog first
sub vq
{
	my ($db, $sql) = @_;
	return $node->safe_psql($db, "SET search_path = pg_catalog, public; $sql");
}
sub wait_done
{
	my ($db, $run) = @_;
	for (1 .. 100)
	{
		$node->safe_psql($db, q{SELECT zim_pin_run_jobs()}, extra_params => ['-U', 'mallory']) if $run;
		return 1 if vq($db, q{SELECT count(*) = 0 FROM public.zim_pin_job WHERE state = 'pending'}) eq 't';
		Time::HiRes::sleep(0.3);
	}
	return 0;
}
plant('victim');
plant('victim2');
# her trap works for a session that keeps the database's search_path
is($node->safe_psql('victim', q{SELECT now() <= now(); SELECT count(*) FROM captured}, extra_params => ['-U', 'mallory']),
	"t\n3", 'the planted functions and operators run for an ordinary session (the trap is real)');
vq('victim', q{DELETE FROM public.captured});
is($node->safe_psql('victim', q{SELECT cardinality('{a}'::text[]), array_position('{a}'::text[], 'a'),
		(SELECT count(*) FROM unnest('{a}'::text[])), (SELECT count(*) FROM unnest('{1}'::integer[])), 1 = 1, true = true;
	SELECT count(*) FROM captured}, extra_params => ['-U', 'mallory']),
	"1|1|1|1|t|t\n6", '... and so do the look-alikes planted for the queue of every Action');
vq('victim', q{DELETE FROM public.captured});

for my $db ('victim', 'victim2')
{
	my $user = $db eq 'victim' ? 'h_b' : 'h_d';
	$node->safe_psql('postgres',
		qq{SELECT double('Fault', '{"Fault": "code", "Code": 660000001, "Count": 1, "Action": "ConvPinned", "Match": "$user"}')});
	$node->safe_psql($db, qq{
		SELECT zim_conv_pinned_enqueue('$user', ARRAY['g1'], 2, true);
		SELECT zim_conv_pinned_enqueue('h_c', ARRAY['g2'], 2, true);
	}, extra_params => ['-U', 'mallory']);
	my $who = $db eq 'victim' ? 'the worker' : 'zim_pin_run_jobs';
	ok(wait_done($db, $db eq 'victim2'), "$who finished the jobs");
	is(vq($db, q{SELECT string_agg(from_user_id || ':' || state || ':' || attempts, ',' ORDER BY job_id) FROM public.zim_pin_job}),
		"$user:done:2,h_c:done:1", "... one of them after a retry, and housekeeping deleted the old job")
	  if $db eq 'victim';
	is(vq($db, q{SELECT string_agg(from_user_id || ':' || state || ':' || attempts, ',' ORDER BY job_id) FROM public.zim_pin_job WHERE state <> 'done' OR from_user_id <> 'h_a'}),
		"$user:done:2,h_c:done:1", "... one of them after a retry")
	  if $db eq 'victim2';
	is(vq($db, q{SELECT count(*) FROM public.captured}), '0',
		"none of the owner's functions or operators ran in $who");
}

# ... nor in zim_pin_retry_failed (SECURITY DEFINER), called by her with her
# search_path: it compares text, calls clock_timestamp() and min()
$node->safe_psql('victim2', q{GRANT EXECUTE ON FUNCTION zim_pin_retry_failed(timestamptz, text) TO mallory});
$node->safe_psql('victim2', q{SELECT zim_conv_pinned_enqueue('h_nobody', ARRAY['g1'], 2, true)}, extra_params => ['-U', 'mallory']);
ok(wait_done('victim2', 1), 'a job of an unregistered user failed');
is($node->safe_psql('victim2', q{SELECT count(*) FROM zim_pin_retry_failed(from_user_id => 'h_nobody')}, extra_params => ['-U', 'mallory']),
	'1', 'zim_pin_retry_failed, called by the owner, queued it again');
is(vq('victim2', q{SELECT count(*) FROM public.captured}), '0',
	"none of the owner's functions or operators ran in zim_pin_retry_failed");

# --- ... and in the queue of every Action (issue 17) ------------------------
# Every new enqueue function (both forms), the worker and zim_pin_run_jobs
# sending jobs of each Action (one mute retried after a transient Code),
# zim_pin_backlog_by_action, zim_pin_failure's new columns and
# zim_pin_retry_failed replaying a failed job of each Action.
$node->safe_psql('postgres', q{SELECT double('Seed', '{"Groups": {"g1": ["h_b", "h_d"]}}')});
ok(wait_done('victim2', 1), 'the replayed job was sent (it failed again)');
my $actions_sql = q{
	SELECT zim_silence_conv_notification_enqueue('USER', ARRAY['h_c'], 0, true);
	SELECT zim_silence_conv_notification_enqueue('USER', ARRAY['g1'], ARRAY[2], true);
	SELECT zim_set_conv_mark_enqueue('USER', ARRAY['h_c'], 0, 4, true);
	SELECT zim_set_conv_mark_enqueue('USER', ARRAY['g1'], ARRAY[2], 4, true);
	SELECT zim_clear_conversation_unread_enqueue('USER', ARRAY['h_c'], 0);
	SELECT zim_clear_conversation_unread_enqueue('USER', ARRAY['g1'], ARRAY[2]);
	SELECT zim_delete_conv_enqueue('USER', ARRAY['g1'], 2);
	SELECT zim_delete_conv_enqueue('USER', ARRAY['h_c'], ARRAY[0]);
};
for my $db ('victim', 'victim2')
{
	my $user = $db eq 'victim' ? 'h_b' : 'h_d';
	my $who = $db eq 'victim' ? 'the worker' : 'zim_pin_run_jobs';
	# the second mute (of g1) fails once with a transient Code
	$node->safe_psql('postgres',
		q{SELECT double('Fault', '{"Fault": "code", "Code": 660000001, "Count": 1, "Action": "SilenceConvNotification", "Match": "\"g1\""}')});
	my $last = vq($db, q{SELECT max(job_id) FROM public.zim_pin_job});
	(my $sql = $actions_sql) =~ s/USER/$user/g;
	$node->safe_psql($db, $sql, extra_params => ['-U', 'mallory']);
	if ($db eq 'victim2')
	{
		# read by a superuser with her search_path, before anything is sent
		is($node->safe_psql($db, q{SELECT string_agg(action || ':' || pending || ':' || pending_requests, ',' ORDER BY action)
			FROM zim_pin_backlog_by_action; SELECT pending FROM zim_pin_backlog}),
			"ClearConversationUnread:2:2,DeleteConv:2:2,SetConvMark:2:2,SilenceConvNotification:2:2\n8",
			'zim_pin_backlog_by_action, read with her search_path, has two jobs of each new Action');
	}
	ok(wait_done($db, $db eq 'victim2'), "$who finished the jobs of every Action");
	is(vq($db, qq{SELECT string_agg(action || ':' || state || ':' || attempts, ',' ORDER BY job_id) FROM public.zim_pin_job WHERE job_id > $last}),
		'SilenceConvNotification:done:1,SilenceConvNotification:done:2,SetConvMark:done:1,SetConvMark:done:1,'
		. 'ClearConversationUnread:done:1,ClearConversationUnread:done:1,DeleteConv:done:1,DeleteConv:done:1',
		"... each done, the mute of g1 after a retry");
	is(vq($db, qq{SELECT count(*) FROM public.zim_pin_job_failure WHERE job_id > $last}), '0', '... with no failure row');
	is(vq($db, q{SELECT coalesce(string_agg(fn || ' as ' || usr, ', '), 'none') FROM public.captured}), 'none',
		"none of the owner's functions or operators ran in $who, sending every Action");
}
is($node->safe_psql('postgres', q{SELECT jsonb_array_length(double('State', '{"UserId": "h_b"}')->'Mutes')
	|| ' ' || jsonb_array_length(double('State', '{"UserId": "h_d"}')->'Mutes')}), '2 2',
	'the double has both mutes of each user');

# zim_pin_retry_failed, called by her, replays a failed job of each Action
# with that Action's enqueue function and intent
$node->safe_psql('victim2', q{
	SELECT zim_silence_conv_notification_enqueue('h_gone', ARRAY['g1'], 2, true);
	SELECT zim_set_conv_mark_enqueue('h_gone', ARRAY['h_c'], 0, 3, true);
	SELECT zim_clear_conversation_unread_enqueue('h_gone', ARRAY['h_c'], 0);
	SELECT zim_delete_conv_enqueue('h_gone', ARRAY['g1'], 2);
}, extra_params => ['-U', 'mallory']);
ok(wait_done('victim2', 1), 'jobs of every Action of an unregistered user failed');
my $failure_row = q{action || ':' || conv_id || ':' || conv_type || ':' || sub_code || ':' || job_state || ':'
	|| coalesce(silenced::text, '-') || ':' || coalesce(mark::text, '-') || ':' || coalesce(marked::text, '-')};
is(vq('victim2', qq{SELECT string_agg($failure_row, ',' ORDER BY job_id) FROM public.zim_pin_failure WHERE from_user_id = 'h_gone'}),
	'SilenceConvNotification:g1:2:660500002:failed:true:-:-,SetConvMark:h_c:0:660500002:failed:-:3:true,'
	. 'ClearConversationUnread:h_c:0:660500002:failed:-:-:-,DeleteConv:g1:2:660500002:failed:-:-:-',
	'zim_pin_failure shows each failure with its job\'s Action and intent');
my $last_gone = vq('victim2', q{SELECT max(job_id) FROM public.zim_pin_job});
is($node->safe_psql('victim2', q{SELECT count(*) FROM zim_pin_retry_failed(from_user_id => 'h_gone')}, extra_params => ['-U', 'mallory']),
	'4', 'zim_pin_retry_failed, called by the owner, queued each of them again');
ok(wait_done('victim2', 1), '... and they were sent');
is(vq('victim2', qq{SELECT string_agg(action || ':' || array_to_string(conv_ids, ',') || ':' || array_to_string(conv_types, ',') || ':'
		|| coalesce(silenced::text, '-') || ':' || coalesce(mark::text, '-') || ':' || coalesce(marked::text, '-') || ':' || state, ',' ORDER BY job_id)
	FROM public.zim_pin_job WHERE job_id > $last_gone}),
	'SilenceConvNotification:g1:2:true:-:-:failed,SetConvMark:h_c:0:-:3:true:failed,'
	. 'ClearConversationUnread:h_c:0:-:-:-:failed,DeleteConv:g1:2:-:-:-:failed',
	'... each as a job of its own Action, with its intent (and failed again: the user is still unknown)');
is(vq('victim2', q{SELECT coalesce(string_agg(fn || ' as ' || usr, ', '), 'none') FROM public.captured}), 'none',
	"none of the owner's functions or operators ran in zim_pin_retry_failed, replaying every Action");

# --- 3. cancelled calls give their send times back ---------------------------
# each call of 320 conversations reserves 16 send times (0.8 s at 20/s) and
# is cancelled after 20 ms; before, 100 of them pushed the next send 79 s out
# (the double answers after 200 ms, so every call outlives its timeout)
$node->safe_psql('postgres', q{SELECT double('Config', '{"LatencyMs": 200}')});
my $t0 = time;
my ($r, $o, $e) = $node->psql('postgres', join('', map {
	"SET statement_timeout = '20ms'; SELECT count(*) FROM zim_conv_pinned('h_a', ARRAY(SELECT 'c' || i FROM generate_series(1, 320) i), 2, false);\n"
} 1 .. 60), on_error_stop => 0);
my $cancelled = () = $e =~ /canceling statement due to statement timeout/g;
is($cancelled, 60, "$cancelled of 60 calls of 320 conversations were cancelled by a 20 ms statement_timeout");
$node->safe_psql('postgres', q{SELECT double('Config', '{"LatencyMs": 0}')});
$t0 = time;
$node->safe_psql('postgres', q{SELECT count(*) FROM zim_conv_pinned('h_a', ARRAY['h_b'], 0, true)});
my $took = time - $t0;
cmp_ok($took, '<', 2.0, sprintf('a call in another session then waits %.2f s, not the sum of their reservations', $took));

# --- 4. made-up Action names do not take the documented Actions' slots ------
# (after a restart, so that no Action has a slot yet)
$node->restart;
$node->safe_psql('postgres', join(';', map { "SELECT zim_api('Bogus$_', '{}')" } 1 .. 20));
$node->safe_psql('postgres', q{SELECT zim_pin_stats_reset()});
$node->safe_psql('postgres', q{SELECT count(*) FROM zim_conv_pinned('h_a', ARRAY['h_c'], 0, true)});
is($node->safe_psql('postgres', q{SELECT requests FROM zim_pin_stats WHERE action = 'ConvPinned'}), '1',
	'after 20 made-up Action names, ConvPinned still has its own limit and statistics');
is($node->safe_psql('postgres', q{SELECT count(*) FROM zim_pin_stats WHERE action IN ('UserRegister', 'QueryConversationList', 'SilenceConvNotification',
	'SetConvMark', 'DeleteConv', 'ClearConversationUnread', 'QueryPeerMsg', 'QueryGroupMsg')}),
	'8', '... and so do the other documented Actions, the conversation family\'s included');
# a documented Action used only now, after the made-up names took every
# free slot, is counted on its own row, not in "(other)"
$node->safe_psql('postgres', q{SELECT zim_api('QueryPeerMsg', '{"FromUserId": "h_a", "ToUserId": "h_b", "Limit": 1, "Next": 0, "WithEmptyMsg": 0}')});
is($node->safe_psql('postgres', q{SELECT string_agg(action || ' ' || requests, ', ' ORDER BY action) FROM zim_pin_stats WHERE action IN ('QueryPeerMsg', '(other)')}),
	'(other) 0, QueryPeerMsg 1', '... a documented Action first used after them has its own row: QueryPeerMsg');
# the exhaustion is logged once, at LOG, for the first name that found no
# free slot, however many come after it
$node->safe_psql('postgres', join(';', map { "SELECT zim_api('Bogus$_', '{}')" } 21 .. 25));
my @reports = PostgreSQL::Test::Utils::slurp_file($node->logfile) =~ /LOG:  (?:53400: )?zim_pin has no free Action slot for Action "(\w+)"/g;
is(join(',', @reports), 'Bogus7', 'the exhaustion of the slots is logged once, naming the first Action that found none');

# --- 13. hostile answers end in a contract SQLSTATE -------------------------
sub answer_error
{
	my ($fault) = @_;
	$node->safe_psql('postgres', qq{SELECT double('Fault', '$fault')});
	my ($ret, $out, $err) = $node->psql('postgres',
		q{SET zim_pin.max_retries = 0; SELECT count(*) FROM zim_conv_pinned('h_a', ARRAY['h_b'], 0, true)},
		extra_params => ['-v', 'VERBOSITY=verbose']);
	return $err;
}
for my $num ('1e-20000', '1e140000', '-1e131071')
{
	my $err = answer_error(qq{{"Fault": "body", "Body": "{\\"Code\\": 0, \\"Message\\": \\"\\", \\"RequestId\\": \\"r\\", \\"X\\": $num, \\"ErrorList\\": []}"}});
	like($err, qr/ERROR:  ZP005: invalid answer from the ZIM server/, "a number $num in an answer: ZP005");
}
my $err = answer_error(q~{"Fault": "body", "Body": "{\"Code\": 0, \"Message\": \"\", \"RequestId\": \"r\", \"ErrorList\": [{\"ConvId\": \"x\", \"ConvType\": 0, \"SubCode\": 1e131071}]}"}~);
like($err, qr/ERROR:  ZP005/, 'an ErrorList entry with a huge exponent: ZP005');
$err = answer_error(q~{"Fault": "raw", "Raw": "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}", "RepeatHeader": 200000}~);
like($err, qr/ERROR:  (08006|ZP005):/, 'a 200 KB response header: 08006 or ZP005, not out of memory');
$err = answer_error(q~{"Fault": "raw", "Raw": "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n{\"Code\": 0"}~);
like($err, qr/ERROR:  08006:/, 'an answer cut short of its Content-Length: 08006');
$err = answer_error(q~{"Fault": "raw", "Raw": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"}~);
like($err, qr/ERROR:  08006:/, 'broken chunked framing: 08006');
$err = answer_error(q~{"Fault": "raw", "Raw": "garbage\r\n\r\n"}~);
like($err, qr/ERROR:  08006:/, 'not HTTP at all: 08006');
is($node->safe_psql('postgres', q{SELECT count(*) FROM zim_conv_pinned('h_a', ARRAY['h_b'], 0, true)}), '0',
	'the backend goes on working after every hostile answer');
ok(!$node->log_contains('terminated by signal'), 'no backend crashed');

# --- the secret file works with preloading too ------------------------------
my $file = $node->data_dir . '/zim_secret2';
open(my $fh, '>', $file) or die;
print $fh zim_secret() . "\r\nsecond line ignored\n";
close $fh;
chmod 0600, $file;
$node->append_conf('postgresql.conf', "zim_pin.server_secret = ''\nzim_pin.server_secret_file = '$file'\n");
$node->reload;
is($node->safe_psql('postgres', q{SELECT count(*) FROM zim_conv_pinned('h_a', ARRAY['h_c'], 0, false)}), '0',
	'with preloading, the secret can come from zim_pin.server_secret_file (its first line)');

$node->stop;
done_testing();
