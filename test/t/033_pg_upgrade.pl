# pg_upgrade from 16 to 18 with jobs in the queue (README, "Upgrading the
# server's major with pg_upgrade"): a 16 cluster with done, failed and
# pending jobs of several Actions and their failure rows, both servers from
# the project's caches (test/build-pg), run-tests having installed zim_pin
# into the 16 one (ZIM_OLD_BIN).  Both clusters are configured to send while
# pg_upgrade runs, and nothing is sent; every job and failure row comes
# through unchanged, as does the job id sequence; the new cluster's first
# start with zim_pin.app_id = '' keeps the queue; then the pending jobs are
# sent and new jobs get new ids.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use File::Basename qw(dirname);
use PostgreSQL::Test::Utils;
use Test::More;
use ZimTest;

my ($major) = `pg_config --version` =~ /PostgreSQL (\d+)/;
plan skip_all => "pg_upgrade 16 → 18 runs on the PostgreSQL 18 pass (this is $major)"
	unless defined $major && $major == 18;
my $old_bin = $ENV{ZIM_OLD_BIN};
die "ZIM_OLD_BIN names no PostgreSQL 16 bin directory (test/run-tests sets it on the 18 pass)"
	unless $old_bin && -x "$old_bin/pg_upgrade" && -x "$old_bin/postgres";

# the README's initdb options; the 16 cluster has no checksums (16's default)
my @locale = ('--encoding=UTF8', '--locale=C.UTF-8');

# --- the 16 cluster, its queue sent by zim_pin_run_jobs() only --------------
my $old = zim_node('old', install_path => dirname($old_bin), extra => [@locale]);
like($old->safe_psql('postgres', q{SELECT current_setting('server_version_num') || ' ' || current_setting('data_checksums')}),
	qr/^16\d{4} off$/, 'the old cluster runs PostgreSQL 16 from the cache, without checksums');
$old->safe_psql('postgres', q{SELECT double('Reset'); SELECT register('u1', 'u2', 'u3')});
$old->safe_psql('postgres', q{
	SELECT zim_conv_pinned_enqueue('u1', ARRAY['g1', 'g2'], 2, true);
	SELECT zim_conv_pinned_enqueue('nobody', ARRAY['g5', 'g6'], 2, true);
	SELECT zim_conv_pinned_enqueue('u2', ARRAY['g1', 'ghost'], ARRAY[2, 0], true);
});
is($old->safe_psql('postgres', q{SELECT zim_pin_run_jobs()}), '3', '16: three jobs finished by zim_pin_run_jobs()');
$old->safe_psql('postgres', q{
	SELECT zim_conv_pinned_enqueue('u1', ARRAY['g1'], 2, false);
	SELECT zim_silence_conv_notification_enqueue('u2', ARRAY['u1'], 0, true);
	SELECT zim_set_conv_mark_enqueue('u3', ARRAY['g5'], 2, 9, true);
	SELECT zim_delete_conv_enqueue('u3', ARRAY['g4'], 2);
});

# every column of every row, in one time zone
my $jobs = q{SET TimeZone = 'UTC'; SELECT string_agg(j::text, E'\n' ORDER BY job_id) FROM zim_pin_job j};
my $failures = q{SET TimeZone = 'UTC'; SELECT string_agg(f::text, E'\n' ORDER BY f::text) FROM zim_pin_job_failure f};
my $states = q{SELECT string_agg(job_id || ' ' || action || ' ' || from_user_id || ' ' || state, '; ' ORDER BY job_id) FROM zim_pin_job};
my $sequence = q{SELECT last_value || ' ' || is_called FROM zim_pin_job_job_id_seq};
my $requests = q{SELECT double('State')->'Requests'};
is($old->safe_psql('postgres', $states),
	'1 ConvPinned u1 done; 2 ConvPinned nobody failed; 3 ConvPinned u2 done; 4 ConvPinned u1 pending; '
	  . '5 SilenceConvNotification u2 pending; 6 SetConvMark u3 pending; 7 DeleteConv u3 pending',
	'16: two done, a failed and four pending jobs of four Actions');
my $failures_before = $old->safe_psql('postgres', $failures);
like($failures_before, qr/^\(2,g5,2,660500002,.*\n\(2,g6,2,660500002,.*\n\(3,ghost,0,660800001,/,
	'16: with failure rows, for the failed job and for one conversation of a done one');
my ($jobs_before, $sequence_before, $requests_before) =
	map { $old->safe_psql('postgres', $_) } ($jobs, $sequence, $requests);
is($sequence_before, '7 true', '16: the job id sequence is at 7');
my $default = $old->safe_psql('postgres', q{SELECT default_version FROM pg_available_extensions WHERE name = 'zim_pin'});
is($old->safe_psql('postgres', q{SELECT extversion FROM pg_extension WHERE extname = 'zim_pin'}), $default,
	"16: zim_pin $default");
$old->stop;
# from now on the old cluster is configured to send too: pg_upgrade starts
# it (for --check and for the dump), and it must send nothing
$old->append_conf('postgresql.conf', "zim_pin.worker_database = 'postgres'\n");

# --- the 18 cluster, configured to send before its first start --------------
my $new = zim_node('new', extra => [ '--no-data-checksums', @locale ], start => 0,
	conf => "zim_pin.worker_database = 'postgres'\n");
my $new_bin = $new->config_data('--bindir');

chdir ${PostgreSQL::Test::Utils::tmp_check};    # pg_upgrade writes in its working directory
my @upgrade = (
	"$new_bin/pg_upgrade", '--no-sync',
	'-b' => $old_bin, '-B' => $new_bin,
	'-d' => $old->data_dir, '-D' => $new->data_dir,
	'-p' => $old->port, '-P' => $new->port,
	'-s' => $new->host, '--copy');
command_ok([ @upgrade, '--check' ], 'pg_upgrade --check 16 → 18 passes');
command_ok(\@upgrade, 'pg_upgrade 16 → 18 succeeds');

# --- the new cluster's first start: zim_pin.app_id = '' keeps the queue -----
$new->append_conf('postgresql.conf', "zim_pin.app_id = ''\n");
$new->start;
is($new->safe_psql('postgres', q{SELECT current_setting('server_version_num') ~ '^18'}), 't',
	'the new cluster runs PostgreSQL 18');
ok($new->poll_query_until('postgres', q{SELECT state = 'waiting for configuration' FROM zim_pin_worker WHERE database = 'postgres'}),
	"18 with zim_pin.app_id = '': the worker waits for the configuration");
is($new->safe_psql('postgres', $jobs), $jobs_before, 'every job is there, every column as it was');
is($new->safe_psql('postgres', $failures), $failures_before, '... and every failure row');
is($new->safe_psql('postgres', $sequence), $sequence_before, '... and the job id sequence where it was');
is($new->safe_psql('postgres', q{SELECT extversion FROM pg_extension WHERE extname = 'zim_pin'}), $default,
	"zim_pin is at its default version, $default");
is($new->safe_psql('postgres', qq{SET zim_pin.app_id = '$ENV{ZIM_APP_ID}'; $requests}), $requests_before,
	'nothing was sent while pg_upgrade ran or since (the double received no request)');

# --- configured: the pending jobs are sent, and the queue goes on -----------
$new->append_conf('postgresql.conf', "zim_pin.app_id = '$ENV{ZIM_APP_ID}'\n");
$new->reload;
my $next = $new->safe_psql('postgres', q{SELECT zim_conv_pinned_enqueue('u1', ARRAY['g9'], 2, true)});
is($next, '8', 'a job enqueued after the upgrade takes the next job id, after every old one');
ok($new->poll_query_until('postgres', q{SELECT count(*) = 0 FROM zim_pin_job WHERE state = 'pending'}),
	'the worker of the new cluster sends the pending jobs');
is($new->safe_psql('postgres', $states),
	'1 ConvPinned u1 done; 2 ConvPinned nobody failed; 3 ConvPinned u2 done; 4 ConvPinned u1 done; '
	  . '5 SilenceConvNotification u2 done; 6 SetConvMark u3 done; 7 DeleteConv u3 done; 8 ConvPinned u1 done',
	'... and every one of them is done, the old outcomes unchanged');
is($new->safe_psql('postgres', q{SELECT string_agg(f::text, '; ') FROM zim_pin_job_failure f WHERE job_id > 3}), '',
	'... without failure rows');
is($new->safe_psql('postgres', q{
	SELECT string_agg(c->>'ConvId', ',' ORDER BY c->>'ConvId') FROM jsonb_array_elements(double('State', '{"UserId": "u1"}')->'Pins') c}),
	'g2,g9', 'the double: u1 pinned g1 and g2 on 16, then unpinned g1 and pinned g9 on 18');
is($new->safe_psql('postgres', q{SELECT (s->'Pins') || (s->'Mutes') FROM double('State', '{"UserId": "u2"}') s}),
	'[{"ConvId": "g1", "ConvType": 2}, {"ConvId": "u1", "ConvType": 0}]', '... u2 pinned g1 on 16 and muted its conversation with u1 on 18');
is($new->safe_psql('postgres', q{
	SELECT (s->'Marks')::text || ' ' || (SELECT count(*) FROM jsonb_array_elements(s->'Requests') r
		WHERE r->>'User' = 'u3' AND r->>'Action' = 'DeleteConv')
	FROM double('State', '{"UserId": "u3"}') s}),
	'[{"Marks": [9], "ConvId": "g5", "ConvType": 2}] 1', '... u3 marked g5 and deleted g4 on 18');
is($new->safe_psql('postgres', qq{SELECT count(*) FROM jsonb_array_elements(($requests)) r
	WHERE r->>'Action' = 'ConvPinned' AND r->>'User' = 'nobody'}), '1',
	'... and the failed job was not sent again');

$new->stop;
done_testing();
