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

# --- a queued job of each Action (issue 17) ----------------------------------
# c1 mutes c2, marks it 5, clears its unread count, deletes the group gdel
# and pins the group gpin, in that order: five jobs of five Actions of one
# user, which go out one Action after the other.  A pg_cron job every two
# seconds (pg_cron's interval schedule, 1.5 and later; every minute before)
# drains them.
$node->safe_psql('postgres', q{
	SELECT double('Seed', '{"Conversations": [{"UserId": "c1", "ConvId": "c2", "Unread": 4},
		{"UserId": "c1", "ConvId": "gdel", "ConvType": 2, "Unread": 1}]}');
	SELECT cron.unschedule('zim-pin');
	SELECT zim_silence_conv_notification_enqueue('c1', ARRAY['c2'], 0, true);
	SELECT zim_set_conv_mark_enqueue('c1', ARRAY['c2'], ARRAY[0], 5, true);
	SELECT zim_clear_conversation_unread_enqueue('c1', ARRAY['c2'], 0);
	SELECT zim_delete_conv_enqueue('c1', ARRAY['gdel'], ARRAY[2]);
	SELECT zim_conv_pinned_enqueue('c1', ARRAY['gpin'], 2, true);
});
my $sent_before = $node->safe_psql('postgres', q{SELECT jsonb_array_length(double('State')->'Requests')});
$node->safe_psql('postgres', q{SELECT pg_sleep(1.5)});
is($node->safe_psql('postgres', q{SELECT string_agg(action || ':' || state, ',' ORDER BY job_id) FROM zim_pin_job WHERE job_id > 3}),
	'SilenceConvNotification:pending,SetConvMark:pending,ClearConversationUnread:pending,DeleteConv:pending,ConvPinned:pending',
	'five jobs of five Actions wait, each with its Action');
my $runs_before = $node->safe_psql('postgres', q{SELECT coalesce(max(runid), 0) FROM cron.job_run_details});
# interval schedules came with pg_cron 1.5; Debian 12's for PostgreSQL 15 is 1.4
my $cron_version = $node->safe_psql('postgres', q{SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'});
my ($cron_major, $cron_minor) = split /\./, $cron_version;
my $schedule = ($cron_major > 1 || $cron_minor >= 5) ? '2 seconds' : '* * * * *';
$node->safe_psql('postgres', "SELECT cron.schedule('zim-pin-fast', '$schedule', 'SELECT zim_pin_run_jobs()')");
ok($node->poll_query_until('postgres',
	q{SELECT count(*) = 0 FROM zim_pin_job WHERE state = 'pending'}),
	'a pg_cron job calling zim_pin_run_jobs() finished the jobs of every Action');
is($node->safe_psql('postgres', q{SELECT string_agg(action || ':' || state || ':' || attempts || ':' || last_code, ',' ORDER BY job_id) FROM zim_pin_job WHERE job_id > 3}),
	'SilenceConvNotification:done:1:0,SetConvMark:done:1:0,ClearConversationUnread:done:1:0,DeleteConv:done:1:0,ConvPinned:done:1:0',
	'... each done at its first attempt');
is($node->safe_psql('postgres', q{SELECT count(*) FROM zim_pin_job_failure f WHERE f.job_id > 3}), '0',
	'... with no failure row');
my $state = q{SELECT double('State', '{"UserId": "c1"}')};
is($node->safe_psql('postgres', qq{SELECT s->'Mutes' FROM ($state) t(s)}),
	'[{"ConvId": "c2", "ConvType": 0}]', 'the double has c2 muted');
is($node->safe_psql('postgres', qq{SELECT s->'Marks' FROM ($state) t(s)}),
	'[{"Marks": [5], "ConvId": "c2", "ConvType": 0}]', '... marked 5');
is($node->safe_psql('postgres', qq{SELECT c->>'Unread' FROM ($state) t(s), jsonb_array_elements(s->'Conversations') c WHERE c->>'ConvId' = 'c2'}),
	'0', '... with its unread count cleared (it was 4)');
is($node->safe_psql('postgres', qq{SELECT count(*) FROM ($state) t(s), jsonb_array_elements(s->'Conversations') c WHERE c->>'ConvId' = 'gdel'}),
	'0', '... the group gdel deleted');
is($node->safe_psql('postgres', qq{SELECT string_agg(p->>'ConvId', ',' ORDER BY p->>'ConvId') FROM ($state) t(s), jsonb_array_elements(s->'Pins') p}),
	'c2,gpin', '... and gpin pinned beside c2');
# in the user's order: the double received them one Action after the other
is($node->safe_psql('postgres', qq{SELECT string_agg(r->>'Action', ',' ORDER BY n)
	FROM jsonb_array_elements(double('State')->'Requests') WITH ORDINALITY AS q(r, n) WHERE n > $sent_before}),
	'SilenceConvNotification,SetConvMark,ClearConversationUnread,DeleteConv,ConvPinned',
	'... one request each, in the order they were queued');
is($node->safe_psql('postgres', qq{SELECT count(*) FROM cron.job_run_details WHERE runid > $runs_before AND status = 'failed'}),
	'0', 'pg_cron recorded no run as failed');

$node->stop;
done_testing();
