# Where no worker runs, pg_cron drains the queue by calling
# zim_pin_run_jobs() every minute (Debian's postgresql-15-cron).
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Utils;
use Test::More;
use ZimTest;

my $node = zim_node('cron', preload => 0, conf => <<'CONF');
shared_preload_libraries = 'pg_cron,zim_pin'
cron.database_name = 'postgres'
cron.use_background_workers = on
CONF
$node->safe_psql('postgres', q{
	CREATE EXTENSION pg_cron;
	SELECT double('Reset');
	SELECT register('c1', 'c2');
	SELECT zim_conv_pinned_enqueue('c1', ARRAY['c2', 'ghost'], 0, true);
	SELECT zim_conv_pinned_enqueue('c1', ARRAY['grp'], 2, true);
	SELECT zim_conv_pinned_enqueue('c1', ARRAY['grp'], 2, false);
});
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'zim_pin%'}),
	'0', 'no zim_pin worker runs (zim_pin.worker_database is not set)');
$node->safe_psql('postgres', q{SELECT pg_sleep(1.5)});
is($node->safe_psql('postgres', q{SELECT count(*) FROM zim_pin_job WHERE state = 'pending'}),
	'3', 'the jobs wait');

$node->safe_psql('postgres', q{SELECT cron.schedule('zim-pin', '* * * * *', 'SELECT zim_pin_run_jobs()')});
ok($node->poll_query_until('postgres',
	q{SELECT count(*) = 0 FROM zim_pin_job WHERE state = 'pending'}),
	'a pg_cron job calling zim_pin_run_jobs() finished the jobs');
is($node->safe_psql('postgres', q{SELECT string_agg(state, ',' ORDER BY job_id) FROM zim_pin_job}),
	'done,done,done', '... all three done');
is($node->safe_psql('postgres', q{
	SELECT string_agg(p->>'ConvId', ',') FROM jsonb_array_elements(double('State', '{"UserId": "c1"}')->'Pins') p}),
	'c2', '... in order: the group was pinned, then unpinned');
is($node->safe_psql('postgres', q{
	SELECT f.conv_id || ':' || f.sub_code FROM zim_pin_job_failure f}),
	'ghost:660800001', '... with the failure row');
like($node->safe_psql('postgres', q{
	SELECT status || ' ' || return_message FROM cron.job_run_details ORDER BY runid LIMIT 1}),
	qr/^succeeded SELECT 1$/, 'pg_cron recorded the run as succeeded');

$node->stop;
done_testing();
