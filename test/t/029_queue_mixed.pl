# The queue with every conversation Action, through the worker (issue 17):
#
#  (a) one user's mixed sequence over all Actions (mute on, mute off, mark
#      set, pin, mark cancel, delete, mute, clear, delete, clear, unpin,
#      mark), committed at once and one job per transaction, ends in the
#      state that sending the jobs one by one in order gives; no request of
#      the user leaves before the answers of the user's previous group;
#  (b) SIGKILL of the worker in the middle of a mixed batch of six users:
#      every job ends done, none is lost, and nothing is sent twice out of
#      order;
#  (c) leases running out on a batch of deletes: each job ends with one
#      outcome, which the runner that lost its lease does not overwrite.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use ZimTest;

my $node = zim_node('queue_mixed',
	conf => "zim_pin.worker_database = 'postgres'\nrestart_after_crash = on\n");
$node->safe_psql('postgres', q{
	SELECT double('Reset');
	CREATE FUNCTION st(u text) RETURNS jsonb LANGUAGE sql AS $$
		SELECT double('State', jsonb_build_object('UserId', u)) $$;
	-- a user's state in the double, each part sorted: mutes, marks, pins,
	-- conversations with their unread count
	CREATE FUNCTION user_state(u text) RETURNS text LANGUAGE sql AS $$
		SELECT 'mutes ' || coalesce((SELECT string_agg((m->>'ConvId') || '/' || (m->>'ConvType'), ' ' ORDER BY m->>'ConvId', m->>'ConvType')
		                             FROM jsonb_array_elements(s->'Mutes') m), '')
		    || '; marks ' || coalesce((SELECT string_agg((m->>'ConvId') || '/' || (m->>'ConvType') || (m->>'Marks'), ' ' ORDER BY m->>'ConvId', m->>'ConvType')
		                             FROM jsonb_array_elements(s->'Marks') m), '')
		    || '; pins ' || coalesce((SELECT string_agg((p->>'ConvId') || '/' || (p->>'ConvType'), ' ' ORDER BY p->>'ConvId', p->>'ConvType')
		                             FROM jsonb_array_elements(s->'Pins') p), '')
		    || '; convs ' || coalesce((SELECT string_agg((c->>'ConvId') || '/' || (c->>'ConvType') || ':' || (c->>'Unread'), ' ' ORDER BY c->>'ConvId', c->>'ConvType')
		                             FROM jsonb_array_elements(s->'Conversations') c), '')
		FROM st(u) s $$;
});

sub wait_all_finished
{
	my ($timeout) = @_;
	my $t0 = time;
	while (time - $t0 < $timeout)
	{
		my ($rc, $out) = $node->psql('postgres', q{SELECT count(*) FROM zim_pin_job WHERE state = 'pending'});
		return time - $t0 if $rc == 0 && $out eq '0';
		usleep(100_000);
	}
	return undef;
}

# The mixed sequence of one user, job by job.  Peers xpa and xpb, groups xga
# and xgb (the user a member); the user starts with the conversations xpa
# (3 unread), xga (2) and xgb (1).
sub sequence
{
	my ($u) = @_;
	return (
		qq{zim_silence_conv_notification_enqueue('$u', ARRAY['xpa', 'xga'], ARRAY[0, 2], true)},    # 1 mute
		qq{zim_silence_conv_notification_enqueue('$u', ARRAY['xpa'], 0, false)},                     # 2 unmute
		qq{zim_set_conv_mark_enqueue('$u', ARRAY['xpa', 'xgb'], ARRAY[0, 2], 5, true)},               # 3 mark
		qq{zim_conv_pinned_enqueue('$u', ARRAY['xga', 'xpb'], ARRAY[2, 0], true)},                    # 4 pin
		qq{zim_set_conv_mark_enqueue('$u', ARRAY['xgb'], 2, 5, false)},                               # 5 unmark
		qq{zim_delete_conv_enqueue('$u', ARRAY['xpa'], 0)},                                           # 6 delete
		qq{zim_silence_conv_notification_enqueue('$u', ARRAY['xpa'], 0, true)},                      # 7 mute
		qq{zim_clear_conversation_unread_enqueue('$u', ARRAY['xga', 'xgb'], 2)},                      # 8 clear
		qq{zim_delete_conv_enqueue('$u', ARRAY['xgb'], ARRAY[2])},                                    # 9 delete
		qq{zim_clear_conversation_unread_enqueue('$u', ARRAY['xgb'], ARRAY[2])},                      # 10 clear
		qq{zim_conv_pinned_enqueue('$u', ARRAY['xpb'], 0, false)},                                    # 11 unpin
		qq{zim_set_conv_mark_enqueue('$u', ARRAY['xpa'], 0, 9, true)});                               # 12 mark
}

# Sent one by one, in order: xpa is unmuted (2), deleted (6), muted again,
# which brings its conversation back (7); xgb is marked and unmarked, then
# deleted (9), so the clear after it (10) finds no conversation: 660800002.
# Pinning xpb creates its conversation.  Sent in another order, some part
# differs: a clear before the delete has no failure, a mute before the
# delete leaves no conversation xpa, an unpin before the pin leaves xpb pinned.
my $expected_state = 'mutes xga/2 xpa/0; marks xpa/0[5, 9]; pins xga/2; convs xga/2:0 xpa/0:0 xpb/0:0';
# The groups (a user's consecutive jobs of one Action) in order.
my @groups = qw(SilenceConvNotification SetConvMark ConvPinned SetConvMark DeleteConv
  SilenceConvNotification ClearConversationUnread DeleteConv ClearConversationUnread
  ConvPinned SetConvMark);

sub seed_users
{
	my (@users) = @_;
	my $convs = join(', ',
		map { my $u = $_; qq{{"UserId": "$u", "ConvId": "xpa", "ConvType": 0, "Unread": 3},
			{"UserId": "$u", "ConvId": "xga", "ConvType": 2, "Unread": 2},
			{"UserId": "$u", "ConvId": "xgb", "ConvType": 2, "Unread": 1}} } @users);
	my $members = join(', ', map { qq{"$_"} } @users);
	my $names = join(', ', map { qq{"$_"} } @users, 'xpa', 'xpb');
	return $node->safe_psql('postgres', qq{SELECT double('Seed', '{"Users": [$names],
		"Groups": {"xga": [$members], "xgb": [$members]}, "Conversations": [$convs]}')->'Code'});
}

# A user's requests in order of receipt, as runs of one Action:
# [Action, first T, last T, requests]
sub runs_of
{
	my ($u) = @_;
	my $out = $node->safe_psql('postgres', qq{
		SELECT r->>'Action', r->>'T' FROM jsonb_array_elements(double('State')->'Requests') r
		WHERE r->>'User' = '$u' ORDER BY (r->>'T')::float8});
	my @runs;
	for my $line (split /\n/, $out)
	{
		my ($a, $t) = split /\|/, $line;
		if (@runs && $runs[-1][0] eq $a)
		{
			$runs[-1][2] = $t;
			$runs[-1][3]++;
		}
		else
		{
			push @runs, [ $a, $t, $t, 1 ];
		}
	}
	return @runs;
}

# The shortest time between the last request of one run and the first of
# the next: at least the double's latency if each group waited for the
# answers of the one before (the double answers LatencyMs after receipt).
sub min_gap
{
	my @runs = @_;
	my $gap;
	for my $i (1 .. $#runs)
	{
		my $g = $runs[$i][1] - $runs[ $i - 1 ][2];
		$gap = $g if !defined $gap || $g < $gap;
	}
	return $gap // 0;
}

# Does the server log, from offset on, match re within timeout seconds?
sub log_has
{
	my ($re, $offset, $timeout) = @_;
	my $t0 = time;
	while (time - $t0 < $timeout)
	{
		return 1 if slurp_file($node->logfile, $offset) =~ $re;
		usleep(200_000);
	}
	return 0;
}

sub jobs_of
{
	my ($u) = @_;
	return $node->safe_psql('postgres', qq{SELECT string_agg(state, ' ' ORDER BY job_id) FROM zim_pin_job WHERE from_user_id = '$u'});
}

sub failures_of
{
	my ($u) = @_;
	return $node->safe_psql('postgres', qq{
		SELECT string_agg((j.job_id - (SELECT min(job_id) FROM zim_pin_job WHERE from_user_id = '$u') + 1)
		                  || ':' || f.action || ':' || f.conv_id || '/' || f.conv_type || ':' || f.sub_code, ' ' ORDER BY f.job_id, f.conv_id)
		FROM zim_pin_failure f JOIN zim_pin_job j USING (job_id) WHERE j.from_user_id = '$u'});
}

# --- (a) a mixed sequence, through the worker ----------------------------------
# mx1 commits its twelve jobs in one transaction, mx2 each in its own.  The
# double answers 250 ms after it receives a request.
my $latency = 0.25;
is(seed_users('mx1', 'mx2'), '0', 'users, groups and conversations seeded');
$node->safe_psql('postgres', qq{SELECT double('Config', '{"LatencyMs": 250}')});
$node->safe_psql('postgres', 'BEGIN; ' . join('; ', map { "SELECT $_" } sequence('mx1')) . '; COMMIT;');
$node->safe_psql('postgres', "SELECT $_") for sequence('mx2');
ok(defined wait_all_finished(90), 'the worker finished both users\' jobs');
for my $u (qw(mx1 mx2))
{
	is(jobs_of($u), join(' ', ('done') x 12), "$u: the twelve jobs are done");
	is($node->safe_psql('postgres', qq{SELECT user_state('$u')}), $expected_state,
		"$u: the double holds the state that sending the jobs in order gives");
	is(failures_of($u), '10:ClearConversationUnread:xgb/2:660800002',
		"$u: the one failure row is the clear after the delete of xgb");
	my @runs = runs_of($u);
	is(join(' ', map { $_->[0] } @runs), join(' ', @groups),
		"$u: the requests went out Action after Action in job order");
	my $gap = min_gap(@runs);
	cmp_ok($gap, '>=', $latency - 0.005,
		sprintf("$u: each Action's requests left after the answers to the one before (gap %.3f s >= %.2f s)", $gap, $latency));
}
# mx1's jobs were all there at once: each group went out merged
is(join(' ', map { $_->[3] } runs_of('mx1')), '2 1 1 1 1 1 2 1 1 1 1',
	'mx1: mute and unmute were one group (unmute xpa, mute xga), the two clears of job 8 two requests');
like($node->safe_psql('postgres', q{SELECT last_message FROM zim_pin_job WHERE from_user_id = 'mx1' ORDER BY job_id LIMIT 1}),
	qr/^success; 1 conversation left to job \d+$/, 'mx1: the first mute left xpa to the unmute after it');
is($node->safe_psql('postgres', q{SELECT max(attempts) FROM zim_pin_job}), '1', 'every job at its first attempt');

# --- (b) SIGKILL of the worker in the middle of a mixed batch --------------------
# Six users, each the twelve jobs; at 400 ms a round trip a user's eleven
# groups take over 4 s.  The worker is killed once some jobs are done.
$node->safe_psql('postgres', q{DELETE FROM zim_pin_job; SELECT double('Reset')});
my @users = map { "mk$_" } 1 .. 6;
is(seed_users(@users), '0', 'six users seeded');
$node->safe_psql('postgres', q{SELECT double('Config', '{"LatencyMs": 400}')});
for my $u (@users[0 .. 2])
{
	$node->safe_psql('postgres', 'BEGIN; ' . join('; ', map { "SELECT $_" } sequence($u)) . '; COMMIT;');
}
$node->safe_psql('postgres', "SELECT $_") for map { sequence($_) } @users[3 .. 5];
# Kill it while it waits on the network with claims in hand, so that the
# requests of a round are on the wire (on 16 every zim_pin wait shows as
# wait_event_type Extension; with jobs claimed it is not the idle wait).
my ($pid, $done, $pending) = ('', 0, 0);
my $t0 = time;
while (time - $t0 < 60)
{
	($pid, $done, $pending) = split /\|/, $node->safe_psql('postgres', q{
		SELECT coalesce((SELECT pid FROM pg_stat_activity WHERE backend_type = 'zim_pin worker'
		                 AND wait_event_type = 'Extension' LIMIT 1)::text, ''),
		       count(*) FILTER (WHERE state = 'done'), count(*) FILTER (WHERE state = 'pending')
		FROM zim_pin_job
		HAVING count(*) FILTER (WHERE state = 'pending' AND claimed_by IS NOT NULL) > 0});
	$pid //= '';
	$done //= 0;
	$pending //= 0;
	last if $pid ne '' && $done >= 6;
	usleep(20_000);
}
ok($pid ne '' && $pending > 0,
	"the worker (pid $pid) waits on the network in the middle of the batch: $done done, $pending pending");
kill 'KILL', $pid if $pid ne '';
# the postmaster restarts every backend; wait for it to accept connections
$node->poll_query_until('postgres', 'SELECT true') or die 'no restart';
ok(defined wait_all_finished(120), 'after SIGKILL of the worker, every job finished');
is($node->safe_psql('postgres', q{SELECT count(*) || ' ' || count(*) FILTER (WHERE state = 'done') FROM zim_pin_job}),
	'72 72', 'none is lost: all 72 jobs are done');
cmp_ok($node->safe_psql('postgres', q{SELECT max(attempts) FROM zim_pin_job}), '<=', 2,
	'... those the worker had in flight at their second attempt at most');
# The jobs the killed worker held were claimed again (their attempt by the
# dead runner counts).  Which users had requests on the wire depends on the
# moment: the "off" requests of a batch go before all of its "on" ones.
my $reclaimed = $node->safe_psql('postgres', q{SELECT count(*) FROM zim_pin_job WHERE attempts = 2});
my $total = $node->safe_psql('postgres', q{SELECT jsonb_array_length(double('State')->'Requests')});
cmp_ok($reclaimed, '>', 0, "the $reclaimed job(s) the killed worker held were claimed again ($total requests in all)");
# A resend of the group that was on the wire when the worker died is allowed:
# each of its requests sets an absolute state (mute, mark, pin, delete,
# clear), so sending it again changes nothing.  What must not happen is a
# request of an earlier group after a later one, or of a later group before
# an earlier one had its answer: either would show as a run of one Action
# out of the job order below (a resend of the same group joins its own run).
for my $u (@users)
{
	is($node->safe_psql('postgres', qq{SELECT user_state('$u')}), $expected_state,
		"$u: the double holds the state that sending the jobs in order gives");
	is(failures_of($u), '10:ClearConversationUnread:xgb/2:660800002',
		"$u: the one failure row is still the clear after the delete of xgb");
	my @runs = runs_of($u);
	is(join(' ', map { $_->[0] } @runs), join(' ', @groups),
		"$u: no request went out of job order (a resend only repeats the group on the wire)");
	my $n = 0;
	$n += $_->[3] for @runs;
	cmp_ok($n, '<=', 13 + 1 + 2, "$u: $n requests: at most one group's worth sent again");
}

# --- (c) leases running out on a batch of deletes --------------------------------
# A 2 s lease; zim_pin.timeout_ms 10 s lets the worker count only one
# request into a chunk (half a lease), so it sends one delete at a time.
# The delete of lzd1 hangs 4 s: the lease runs out while it is on the
# wire.  zim_pin_run_jobs takes the jobs over and records them; when the
# worker's request ends, it must neither record it over the newer outcome
# nor send the deletes it has not sent.  lzd3 always answers 660800002, so
# its job's one failure row would be doubled by a second recording.
$node->safe_psql('postgres', q{DELETE FROM zim_pin_job; SELECT double('Reset')});
$node->safe_psql('postgres', q{ALTER SYSTEM SET zim_pin.job_lease = '2s'});
$node->safe_psql('postgres', q{ALTER SYSTEM SET zim_pin.timeout_ms = 10000});
$node->reload;
sleep 2;    # the idle worker has exited; the next one reads the new settings
my @ld = map { "lzd$_" } 1 .. 5;
my $ld_convs = join(', ', (map { qq{{"UserId": "ld_a", "ConvId": "$_", "ConvType": 0}} } @ld),
	'{"UserId": "ld_b", "ConvId": "lzb1", "ConvType": 0}');
is($node->safe_psql('postgres', qq{SELECT double('Seed', '{"Users": ["ld_a", "ld_b"], "Conversations": [$ld_convs]}')->'Code'}),
	'0', 'deleters seeded');
$node->safe_psql('postgres', q{
	SELECT double('Fault', '{"Fault": "hang", "Ms": 4000, "Action": "DeleteConv", "Match": "lzd1"}');
	SELECT double('Fault', '{"Fault": "code", "Code": 660800002, "Message": "no such conversation", "Action": "DeleteConv", "Match": "lzd3", "Count": 10}');
});
my $log_offset = -s $node->logfile;
$node->safe_psql('postgres', 'BEGIN; '
	  . join('; ', map { "SELECT zim_delete_conv_enqueue('ld_a', ARRAY['$_'], 0)" } @ld)
	  . q{; SELECT zim_delete_conv_enqueue('ld_b', ARRAY['lzb1'], ARRAY[0]); COMMIT;});
ok($node->poll_query_until('postgres', q{
	SELECT count(*) > 0 FROM zim_pin_job WHERE 'lzd1' = ANY (conv_ids)
	AND claimed_by IS NOT NULL AND claimed_until < now() AND state = 'pending'}),
	'the worker\'s lease on the delete of lzd1 ran out while it was on the wire');
my $taken = $node->safe_psql('postgres', q{SELECT zim_pin_run_jobs()});
cmp_ok($taken, '>=', 1, "zim_pin_run_jobs took over and finished $taken job(s)");
ok(defined wait_all_finished(30), 'every delete job finished');
my $snapshot = q{SELECT string_agg(conv_ids[1] || ' ' || state || ' ' || attempts || ' ' || coalesce(last_code::text, '-')
	|| ' ' || coalesce(last_message, '-') || ' ' || coalesce(finished_at::text, '-'), E'\n' ORDER BY job_id) FROM zim_pin_job};
my $before = $node->safe_psql('postgres', $snapshot);
# The delete of lzd1 was on the wire (the double held it) when its lease
# ran out: the worker must say it did not record it, not that it gave it
# up unsent.  Whatever else it had claimed of ld_a is one or the other.
my $id1 = $node->safe_psql('postgres', q{SELECT job_id FROM zim_pin_job WHERE conv_ids = ARRAY['lzd1']});
ok(log_has(qr/zim_pin job $id1 was not recorded: its lease ran out and another runner took it/, $log_offset, 30),
	"the worker logged that it did not record the delete of lzd1 (job $id1), which it had sent");
my $ids_a = $node->safe_psql('postgres', q{SELECT string_agg(job_id::text, ' ' ORDER BY job_id) FROM zim_pin_job WHERE from_user_id = 'ld_a'});
my %lost;
my $lease_log = slurp_file($node->logfile, $log_offset);
$lost{$1}++ while $lease_log =~ /zim_pin job (\d+) was (?:not recorded|given up unsent): its lease ran out/g;
is(join(' ', sort { $a <=> $b } keys %lost), $ids_a, "... and named each of ld_a's jobs it lost, once: "
	  . join(', ', map { "$_ x$lost{$_}" } sort { $a <=> $b } keys %lost));
ok(!grep({ $_ > 1 } values %lost), '... no job twice');
sleep 2;    # the worker's hung request has ended (4 s), and it has given up
is($node->safe_psql('postgres', $snapshot), $before, 'no job\'s outcome changed after the worker\'s late answer');
is($node->safe_psql('postgres', q{SELECT string_agg(conv_ids[1] || ' ' || state || ' ' || last_code, ', ' ORDER BY job_id) FROM zim_pin_job}),
	'lzd1 done 0, lzd2 done 0, lzd3 done 660800002, lzd4 done 0, lzd5 done 0, lzb1 done 0',
	'each delete job is done, lzd3 with the Code of the conversation ZIM did not have');
is($node->safe_psql('postgres', q{SELECT string_agg(conv_id || ' ' || sub_code, ', ') FROM zim_pin_failure}),
	'lzd3 660800002', 'one failure row, the conversation ZIM did not have, recorded once');
is($node->safe_psql('postgres', q{SELECT user_state('ld_a') || ' | ' || (st('ld_b')->>'ConversationCount')}),
	'mutes ; marks ; pins ; convs lzd3/0:0 | 0',
	'every conversation is deleted but lzd3, for which the injected 660800002 stood in for ZIM');
$node->safe_psql('postgres', q{SELECT double('Config', '{"LatencyMs": 0}')});

$node->stop;
done_testing();
