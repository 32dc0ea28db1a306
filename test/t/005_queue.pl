# The transactional queue with its worker: commit-gated and prompt, in
# order per user, failure rows, retries, no job lost to SIGKILL or an
# immediate restart, flat memory for a backend that enqueues, a backlog
# drained at the vendor's rate, and a worker that never blocks SIGTERM or
# DROP DATABASE.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use ZimTest;

my $node = zim_node('queue',
	conf => "zim_pin.worker_database = 'postgres'\nrestart_after_crash = on\n");
$node->safe_psql('postgres', q{
	SELECT double('Reset');
	SELECT register('q1', 'q2', 'q3', 'q4', 'peer');
	CREATE FUNCTION pins(u text) RETURNS text LANGUAGE sql AS $$
		SELECT coalesce(string_agg(p->>'ConvId', ',' ORDER BY p->>'ConvId'), '')
		FROM jsonb_array_elements(double('State', jsonb_build_object('UserId', u))->'Pins') p $$;
	CREATE FUNCTION convpinned_requests() RETURNS bigint LANGUAGE sql AS $$
		SELECT count(*) FROM jsonb_array_elements(double('State')->'Requests') r
		WHERE r->>'Action' = 'ConvPinned' $$;
});

sub wait_all_finished
{
	my ($what, $timeout) = @_;
	$timeout //= 60;
	my $t0 = time;
	while (time - $t0 < $timeout)
	{
		return time - $t0
		  if $node->safe_psql('postgres',
			q{SELECT count(*) FROM zim_pin_job WHERE state = 'pending'}) eq '0';
		Time::HiRes::sleep(0.1);
	}
	return undef;
}

# --- rollback sends nothing --------------------------------------------------
$node->safe_psql('postgres', q{
	BEGIN;
	SELECT zim_conv_pinned_enqueue('q1', ARRAY['peer'], 0, true);
	ROLLBACK;
});
Time::HiRes::sleep(1.5);
is($node->safe_psql('postgres', q{SELECT count(*) FROM zim_pin_job}), '0', 'a rolled-back job does not exist');
is($node->safe_psql('postgres', q{SELECT convpinned_requests()}), '0', '... and nothing was sent');

# --- commit sends within a second -------------------------------------------
my $t0 = time;
$node->safe_psql('postgres', q{SELECT zim_conv_pinned_enqueue('q1', ARRAY['peer', 'ghost'], 0, true)});
my $took = wait_all_finished('first job', 10);
ok(defined $took && $took < 1.0, sprintf('a committed job is done within a second (%.2f s)', $took // -1));
is($node->safe_psql('postgres', q{SELECT state || ' ' || attempts || ' ' || last_code FROM zim_pin_job}),
	'done 1 0', '... done at the first attempt');
is($node->safe_psql('postgres', q{SELECT pins('q1')}), 'peer', '... and the double has the pin');
is($node->safe_psql('postgres', q{
	SELECT string_agg(conv_id || ':' || sub_code, ',') FROM zim_pin_job_failure}),
	'ghost:660800001', 'the unregistered peer is a failure row');
my $worker_ok = $node->safe_psql('postgres', q{
	SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'zim_pin worker' AND xact_start IS NOT NULL
	AND state = 'active' AND wait_event_type = 'Extension'});
is($worker_ok, 't', 'the worker holds no transaction while it waits on the network');

# --- per-user order under concurrency ----------------------------------------
# four users, each a run of pin/unpin of the same group in 12 transactions;
# q2 and q4 end pinned, q1 and q3 end unpinned
my @h;
for my $u (1 .. 4)
{
	my $sql = '';
	for my $i (1 .. 12)
	{
		my $pinned = (($i % 2) == ($u % 2)) ? 'true' : 'false';
		$sql .= "SELECT zim_conv_pinned_enqueue('q$u', ARRAY['order'], 2, $pinned);\n";
	}
	my ($out, $err) = ('', '');
	push @h, IPC::Run::start([ 'psql', '-XAtq', '-d', $node->connstr('postgres') ],
		'<', \$sql, '>', \$out, '2>', \$err);
}
$_->finish for @h;
ok(defined wait_all_finished('order', 30), 'the 48 concurrent jobs finished');
is(join(' ', map { $node->safe_psql('postgres', "SELECT pins('q$_')") } 1 .. 4),
	'peer order  order', 'each user ends as its last job says (q2 and q4 pinned, q1 and q3 not)');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM (SELECT from_user_id, finished_at,
	       lag(finished_at) OVER (PARTITION BY from_user_id ORDER BY job_id) AS prev
	       FROM zim_pin_job) s WHERE finished_at < prev}),
	'0', 'each user\'s jobs finished in enqueue order');

# --- a whole-call failure fails the job at once, with a row per conversation --
$node->safe_psql('postgres', q{SELECT zim_conv_pinned_enqueue('nobody', ARRAY['g1', 'g2'], 2, true)});
wait_all_finished('nobody', 10);
is($node->safe_psql('postgres', q{
	SELECT j.state || ' ' || j.attempts || ' ' || j.last_code || ' ' || string_agg(f.conv_id || ':' || f.sub_code, ',' ORDER BY f.conv_id)
	FROM zim_pin_job j JOIN zim_pin_job_failure f USING (job_id)
	WHERE j.from_user_id = 'nobody' GROUP BY j.state, j.attempts, j.last_code}),
	'failed 1 660500002 g1:660500002,g2:660500002',
	'an unregistered user fails the job at once, every conversation a failure row');

# --- a transient failure is retried, freshly signed --------------------------
$node->safe_psql('postgres', q{
	SELECT double('Fault', '{"Fault": "http503", "Count": 1, "Action": "ConvPinned", "Match": "retry-me"}');
	SELECT zim_conv_pinned_enqueue('q2', ARRAY['retry-me'], 2, true);
});
wait_all_finished('retry', 15);
is($node->safe_psql('postgres', q{
	SELECT state || ' ' || attempts FROM zim_pin_job WHERE conv_ids = ARRAY['retry-me']}),
	'done 2', 'an HTTP 503 is retried: done at the second attempt');

# --- the backlog view ----------------------------------------------------------
is($node->safe_psql('postgres', q{SELECT pending, pending_requests FROM zim_pin_backlog}),
	'0|0', 'zim_pin_backlog shows an empty queue');

# --- SIGKILL of the worker mid-batch loses no job ------------------------------
$node->safe_psql('postgres', q{
	SELECT double('Config', '{"LatencyMs": 300}');
	SELECT zim_conv_pinned_enqueue('q' || (1 + i % 4), ARRAY['k' || i], 2, true) FROM generate_series(1, 40) i;
});
my $pid;
for (1 .. 50)
{
	$pid = $node->safe_psql('postgres', q{
		SELECT pid FROM pg_stat_activity WHERE backend_type = 'zim_pin worker'});
	last if $pid ne '' && $node->safe_psql('postgres',
		q{SELECT count(*) > 0 FROM zim_pin_job WHERE state = 'done' AND conv_ids[1] LIKE 'k%'}) eq 't';
	Time::HiRes::sleep(0.1);
}
ok($pid ne '', "the worker is busy (pid $pid)");
kill 'KILL', $pid;
# the postmaster restarts every backend; wait for it to accept connections
$node->poll_query_until('postgres', 'SELECT true') or die 'no restart';
ok(defined wait_all_finished('after SIGKILL', 60), 'after SIGKILL of the worker mid-batch, every job finished');
is($node->safe_psql('postgres', q{
	SELECT count(*) FILTER (WHERE state = 'done') FROM zim_pin_job WHERE conv_ids[1] LIKE 'k%'}),
	'40', '... all 40 done');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM generate_series(1, 40) i
	WHERE position('k' || i IN pins('q' || (1 + i % 4))) > 0}),
	'40', '... and the double has all 40 pins');

# --- an immediate-mode restart loses no job ------------------------------------
$node->safe_psql('postgres', q{
	SELECT zim_conv_pinned_enqueue('q' || (1 + i % 4), ARRAY['m' || i], 2, true) FROM generate_series(1, 20) i;
});
# jobs finished long ago, for the housekeeping the restarted worker does first
$node->safe_psql('postgres', q{
	UPDATE zim_pin_job SET finished_at = finished_at - interval '8 days'
	WHERE conv_ids = ARRAY['order'];
});
$node->stop('immediate');
$node->start;
ok(defined wait_all_finished('after immediate restart', 60), 'after an immediate-mode restart, every job finished');
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 0 FROM zim_pin_job WHERE conv_ids = ARRAY['order']}),
	'the worker deleted the 48 jobs finished more than zim_pin.job_retention (7 days) ago');
is($node->safe_psql('postgres', q{SELECT count(*) > 0 FROM zim_pin_job WHERE conv_ids[1] LIKE 'k%'}),
	't', '... and kept the recent ones');
is($node->safe_psql('postgres', q{
	SELECT count(*) FILTER (WHERE state = 'done') FROM zim_pin_job WHERE conv_ids[1] LIKE 'm%'}),
	'20', '... all 20 done');
$node->safe_psql('postgres', q{SELECT double('Config', '{"LatencyMs": 0}')});

# --- a backend that enqueues in 5,000 transactions does not grow -----------------
$node->safe_psql('postgres', q{
	SELECT double('Config', '{"RateLimit": 1000000}');
	ALTER SYSTEM SET zim_pin.requests_per_second = 10000;
	SELECT pg_reload_conf();
	CREATE PROCEDURE enqueue_many(n int) LANGUAGE plpgsql AS $$
	BEGIN
		FOR i IN 1..n LOOP
			PERFORM zim_conv_pinned_enqueue('mem' || (i % 500), ARRAY['mem'], 2, true);
			COMMIT;
		END LOOP;
	END $$;
});
my $bg = $node->background_psql('postgres');
my $bpid = $bg->query_safe('SELECT pg_backend_pid()');
chomp $bpid;	# BackgroundPsql of 16.2 keeps the newline
$bg->query_safe('CALL enqueue_many(1000)');
my $rss1 = rss($bpid);
$bg->query_safe('CALL enqueue_many(5000)');
my $rss2 = rss($bpid);
$bg->quit;
cmp_ok($rss2 - $rss1, '<', 512,
	"a backend's memory does not grow over 5,000 enqueuing transactions ($rss1 kB, then $rss2 kB)");
ok(defined wait_all_finished('memory jobs', 90), '... and the worker drained them (6,000 jobs of 500 users)');

sub rss
{
	my $p = shift;
	open(my $f, '<', "/proc/$p/status") or return -1;
	while (<$f>) { return $1 if /^RssAnon:\s+(\d+)/; }
	return -1;
}

# --- 400 jobs of 20 conversations at 120 ms drain at the vendor's rate ----------
$node->safe_psql('postgres', q{
	ALTER SYSTEM RESET zim_pin.requests_per_second;
	SELECT pg_reload_conf();
	SELECT double('Reset');
	SELECT double('Config', '{"LatencyMs": 120}');
	SELECT zim_api('UserRegister', jsonb_build_object('UserInfo',
		(SELECT jsonb_agg(jsonb_build_object('UserId', 'd' || i, 'UserName', 'd', 'UserAvatar', ''))
		 FROM generate_series(b, b + 99) i))) FROM generate_series(1, 400, 100) b;
});
$node->poll_query_until('postgres', q{SELECT current_setting('zim_pin.requests_per_second') = '20'});
$t0 = time;
$node->safe_psql('postgres', q{
	SELECT zim_conv_pinned_enqueue('d' || i, ARRAY(SELECT 'g' || k FROM generate_series(1, 20) k), 2, true)
	FROM generate_series(1, 400) i;
});
$took = wait_all_finished('backlog', 90);
ok(defined $took && $took < 30, sprintf('400 jobs of 20 conversations at 120 ms drained in %.1f s', $took // -1));
is($node->safe_psql('postgres', q{SELECT coalesce(double('State')->'RateLimited'->>'ConvPinned', '0')}),
	'0', '... with no 660300005 from the double');
is($node->safe_psql('postgres', q{SELECT count(*) FROM zim_pin_job WHERE from_user_id LIKE 'd%' AND state = 'done'}),
	'400', '... all done');

# --- SIGTERM and DROP DATABASE -------------------------------------------------
$node->safe_psql('postgres', q{SELECT double('Config', '{"LatencyMs": 0}')});
$node->safe_psql('postgres', q{SELECT zim_conv_pinned_enqueue('q1', ARRAY['t' || i], 2, false) FROM generate_series(1, 60) i});
$pid = '';
for (1 .. 50)
{
	$pid = $node->safe_psql('postgres', q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'zim_pin worker'});
	last if $pid ne '';
	Time::HiRes::sleep(0.05);
}
$t0 = time;
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)") if $pid ne '';
$node->poll_query_until('postgres', "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = 0$pid");
cmp_ok(time - $t0, '<', 2, 'SIGTERM ends a busy worker promptly');
ok(defined wait_all_finished('after SIGTERM', 30), '... and its jobs are finished by a new worker');

$node->safe_psql('postgres', q{CREATE DATABASE scratch});
$node->append_conf('postgresql.conf', "zim_pin.worker_database = 'scratch'\n");
$node->restart;
$node->safe_psql('scratch', q{CREATE EXTENSION zim_pin});
$node->safe_psql('scratch', q{SELECT zim_conv_pinned_enqueue('q1', ARRAY['s1'], 2, true)});
Time::HiRes::sleep(0.3);
$t0 = time;
my ($ret, $out, $err) = $node->psql('postgres', 'DROP DATABASE scratch');
is($ret, 0, sprintf('DROP DATABASE of the worker\'s database succeeds (%.1f s)', time - $t0)) or diag $err;

$node->stop;
done_testing();
