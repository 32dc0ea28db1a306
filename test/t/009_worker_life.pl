# The worker's life cycle (issue 7, item 10): a misnamed worker database is
# logged once and retried with a growing delay, not every second; a worker
# without an AppId or secret leaves, so that its database can be dropped;
# COMMIT PREPARED gets a prepared transaction's job sent at once.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use ZimTest;

# --- a worker database that does not exist ---------------------------------
my $node = zim_node('life', conf => "zim_pin.worker_database = 'nosuchdb'\n");
$node->safe_psql('postgres', q{SELECT double('Reset'); SELECT register('w_a')});
my $log_start = -s $node->logfile;
# a commit that enqueues wakes the launcher, which tries the worker
$node->safe_psql('postgres', q{SELECT zim_conv_pinned_enqueue('w_a', ARRAY['g1'], 2, true)});
sleep 9;
my $log = slurp_file($node->logfile, $log_start);
my $fatals = () = $log =~ /FATAL:  database "nosuchdb" does not exist/g;
my $said = () = $log =~ /zim_pin worker could not connect to database "nosuchdb"/g;
cmp_ok($fatals, '<=', 5, "in 9 s the launcher tried the worker $fatals times, with a growing delay (not every second)");
cmp_ok($fatals, '>=', 2, '... and did try again');
is($said, 1, '... and said so once');
$node->stop;

# --- a worker without an AppId leaves its database free ---------------------
$node = zim_node('unconf', conf => "zim_pin.worker_database = 'wdb'\n");
$node->safe_psql('postgres', q{CREATE DATABASE wdb});
$node->safe_psql('wdb', q{CREATE EXTENSION zim_pin});
$node->append_conf('postgresql.conf', "zim_pin.app_id = ''\n");
$node->reload;
$log_start = -s $node->logfile;
$node->safe_psql('wdb', q{SELECT zim_conv_pinned_enqueue('w_a', ARRAY['g1'], 2, true)});
my $t0 = time;
$log = '';
while (time - $t0 < 20 && $log !~ /zim_pin worker is waiting/)
{
	Time::HiRes::sleep(0.2);
	$log = slurp_file($node->logfile, $log_start);
}
like($log, qr/LOG:  zim_pin worker is waiting for zim_pin.app_id and the secret/,
	'a worker started without an AppId says why');
ok($node->poll_query_until('postgres',
		q{SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'zim_pin worker'}),
	'... and leaves');
my ($ret, $out, $err) = $node->psql('postgres', q{DROP DATABASE wdb});
is($ret, 0, 'DROP DATABASE of the worker\'s database succeeds meanwhile') or diag $err;
$node->stop;

# --- COMMIT PREPARED wakes the worker ----------------------------------------
# The job is prepared in one session and committed from another, after the
# worker left for want of work: the worker must come back for it at once,
# not at its next periodic look (up to a minute later).
$node = zim_node('twopc', conf => "zim_pin.worker_database = 'postgres'\nmax_prepared_transactions = 2\n");
$node->safe_psql('postgres', q{SELECT double('Reset'); SELECT register('w_p')});
$node->safe_psql('postgres', q{BEGIN; SELECT zim_conv_pinned_enqueue('w_p', ARRAY['g1'], 2, true);
	PREPARE TRANSACTION 'zim_p1'});
ok($node->poll_query_until('postgres',
		q{SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'zim_pin worker'}),
	'with only a prepared job, the worker leaves');
sleep 2;
is($node->safe_psql('postgres', q{SELECT count(*) FROM zim_pin_job WHERE state = 'pending'}), '0',
	'... and the prepared job is not visible yet');
$t0 = time;
$node->safe_psql('postgres', q{COMMIT PREPARED 'zim_p1'});
ok($node->poll_query_until('postgres', q{SELECT count(*) = 1 FROM zim_pin_job WHERE state = 'done'}),
	'COMMIT PREPARED gets the job sent');
my $took = time - $t0;
cmp_ok($took, '<', 5, sprintf('... at once (%.1f s)', $took));
$node->stop;

done_testing();
