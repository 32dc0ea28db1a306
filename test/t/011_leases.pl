# Leases (issue 7, item 9): a runner records outcomes, and renews its lease,
# only on the jobs that still carry its claim (pid and lease); a worker that
# is still sending renews the lease of the rest of its batch after each
# chunk, so no other runner takes them from it.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use ZimTest;

my $node = zim_node('leases', conf => <<'CONF');
zim_pin.worker_database = 'postgres'
zim_pin.job_lease = '2s'
zim_pin.timeout_ms = 10000
CONF
$node->safe_psql('postgres', q{SELECT double('Reset')});
is($node->safe_psql('postgres', q{SELECT register('lease_a', 'lease_c', 'lease_b1', 'lease_b2', 'lease_b3', 'lease_b4')}),
	'0', 'users registered');

sub sent_to
{
	my ($user) = @_;
	return $node->safe_psql('postgres', qq{SELECT count(*) FROM jsonb_array_elements(double('State')->'Requests') r
		WHERE r->>'Action' = 'ConvPinned' AND r->>'User' = '$user'});
}

# --- a lease that ran out: the later runner's outcome stands -----------------
# The worker claims both jobs in one batch; the first request hangs 4 s, twice
# the lease.  zim_pin_run_jobs then takes both, and sends and records them.
# When the hung request fails, the worker must neither record it over the
# newer outcome nor send the second job again.
$node->safe_psql('postgres', q{SELECT double('Fault', '{"Fault": "hang", "Ms": 4000, "Match": "lease_a"}')});
my $log_offset = -s $node->logfile;
$node->safe_psql('postgres', q{BEGIN;
	SELECT zim_conv_pinned_enqueue('lease_a', ARRAY['g1'], 2, true);
	SELECT zim_conv_pinned_enqueue('lease_c', ARRAY['g1'], 2, true);
	COMMIT});
ok($node->poll_query_until('postgres',
	q{SELECT count(*) = 2 FROM zim_pin_job WHERE claimed_by IS NOT NULL AND claimed_until < now()}),
	'the worker claimed both jobs, and its lease ran out while the first was on the wire');
is($node->safe_psql('postgres', q{SELECT zim_pin_run_jobs()}), '2',
	'zim_pin_run_jobs took both jobs over, and finished them');
ok($node->wait_for_log(qr/zim_pin job \d+ was not recorded: its lease ran out and another runner took it/, $log_offset),
	'the worker logged that it did not record the job it lost');
ok($node->wait_for_log(qr/zim_pin job \d+ was given up unsent: its lease ran out/, $log_offset),
	'... and that it gave up the other one unsent');
sleep 1;
is($node->safe_psql('postgres', q{SELECT string_agg(from_user_id || ' ' || state || ' ' || attempts || ' ' || last_code, ', ' ORDER BY job_id) FROM zim_pin_job}),
	'lease_a done 2 0, lease_c done 2 0', 'both jobs keep the outcome zim_pin_run_jobs recorded');
is(sent_to('lease_a'), '2', 'the hung job was sent twice (once by each runner)');
is(sent_to('lease_c'), '1', 'the job the worker lost before sending it was sent once');
is($node->safe_psql('postgres', q{SELECT count(*) FROM zim_pin_job_failure}), '0', 'no failure rows');

# --- a worker that is still sending renews its lease -------------------------
# Four jobs, one batch; each request takes 1.5 s, so the batch takes 6 s, three
# leases.  The worker sends one job per chunk (at zim_pin.timeout_ms = 10 s a
# request, only one surely fits in half a lease) and renews the rest's lease
# after each.  zim_pin_run_jobs, called all along, must find nothing to take.
$node->safe_psql('postgres', q{DELETE FROM zim_pin_job});
$node->safe_psql('postgres', q{SELECT double('Fault', '{"Fault": "slow", "Ms": 1500, "Count": 4, "Match": "lease_b"}')});
$node->safe_psql('postgres', q{BEGIN;
	SELECT zim_conv_pinned_enqueue('lease_b' || i, ARRAY['g1'], 2, true) FROM generate_series(1, 4) i;
	COMMIT});
ok($node->poll_query_until('postgres',
	q{SELECT count(*) = 4 FROM zim_pin_job WHERE claimed_by IS NOT NULL OR state <> 'pending'}),
	'the worker claimed the four jobs');
my ($t0, $taken) = (time, 0);
while (time - $t0 < 8
	&& $node->safe_psql('postgres', q{SELECT count(*) FROM zim_pin_job WHERE state = 'pending'}) ne '0')
{
	$taken += $node->safe_psql('postgres', q{SELECT zim_pin_run_jobs()});
	usleep(250_000);
}
my $took = time - $t0;
is($taken, 0, sprintf('zim_pin_run_jobs took no job from the worker in %.1f s', $took));
cmp_ok($took, '>', 4, '... while the batch outlived its first lease twice over');
is($node->safe_psql('postgres', q{SELECT string_agg(state || ' ' || attempts, ', ' ORDER BY job_id) FROM zim_pin_job}),
	'done 1, done 1, done 1, done 1', 'the worker finished every job at the first attempt');
is(join(',', map { sent_to("lease_b$_") } 1 .. 4), '1,1,1,1', 'each was sent once');

$node->stop;
done_testing();
