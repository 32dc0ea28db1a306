# zim_pin_worker (issue 18, item 1): the launcher's row and the worker's,
# running or not, in every state an operator must tell apart: idle,
# sending, backing off after an error (until when), waiting for app_id or
# the secret, the database missing, refusing to run as another role,
# stopped by an error; a cluster that names no worker database, and one
# that does not preload zim_pin.  And the README's monitoring query raises
# its alert exactly when the queue is not being drained.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Utils;
use Test::More;
use ZimTest;

# the README's monitoring check: one row, alert true when it should page
my $monitor = q{
SELECT w.state, w.last_error,
       w.state IN ('backing off', 'waiting for configuration', 'database missing',
                   'cannot connect', 'refused to run', 'no worker slot')
       OR coalesce(b.oldest_pending_age > interval '15 minutes'
                   AND coalesce(w.last_sent_at, w.started_at) < now() - interval '5 minutes', false)
       OR NOT EXISTS (SELECT FROM zim_pin_worker l
                      WHERE l.database IS NULL AND l.state = 'running') AS alert
FROM zim_pin_worker w, zim_pin_backlog b
WHERE w.database = current_database()};

# --- the database is missing -------------------------------------------------
my $node = zim_node('missing', conf => "zim_pin.worker_database = 'nosuchdb'\n");
ok($node->poll_query_until('postgres',
		q{SELECT state = 'database missing' AND backoff_until IS NOT NULL
		  FROM zim_pin_worker WHERE database = 'nosuchdb'}),
	'a worker database that does not exist: "database missing"');
my $r = $node->safe_psql('postgres', q{
	SELECT pid IS NULL, last_error, last_error_at IS NOT NULL, backoff_until > last_error_at
	FROM zim_pin_worker WHERE database = 'nosuchdb'});
is($r, qq{t|database "nosuchdb" does not exist|t|t},
	'... no pid, the server\'s own error as last_error, and when the launcher tries again');
$r = $node->safe_psql('postgres', q{
	SELECT database IS NULL, pid > 0, state, started_at IS NOT NULL
	FROM zim_pin_worker ORDER BY database NULLS FIRST LIMIT 1});
is($r, 't|t|running|t', 'the launcher\'s row: running, with its pid');
is($node->safe_psql('postgres', q{SELECT count(*) FROM zim_pin_worker}), '2',
	'one row for the launcher and one for the worker\'s database');
$node->stop;

# --- a working worker: idle, sending, its counts ------------------------------
$node = zim_node('work', conf => "zim_pin.worker_database = 'postgres'\nzim_pin.job_max_attempts = 50\n");
$node->safe_psql('postgres', q{SELECT double('Reset'); SELECT register('s_a', 's_b')});
ok($node->poll_query_until('postgres',
		q{SELECT state = 'idle' FROM zim_pin_worker WHERE database = 'postgres'}),
	'with nothing queued the worker is idle');
$node->safe_psql('postgres', q{
	SELECT zim_conv_pinned_enqueue('s_a', ARRAY['s_b'], 0, true);
	SELECT zim_silence_conv_notification_enqueue('s_b', ARRAY['s_a'], 0, true)});
ok($node->poll_query_until('postgres', q{
		SELECT state = 'idle' AND jobs_sent >= 2 AND jobs_finished = 2 AND last_sent_at IS NOT NULL
		FROM zim_pin_worker WHERE database = 'postgres'}),
	'two jobs: sent and finished, counted, and the worker is idle again');
is($node->safe_psql('postgres', q{SELECT count(*) FROM zim_pin_job WHERE state = 'done'}), '2',
	'... and they are done');
$r = $node->safe_psql('postgres', $monitor);
is($r, 'idle||f', 'the monitoring query raises no alert');

# a slow answer: the worker is seen sending, with its pid
$node->safe_psql('postgres', q{
	SELECT double('Fault', '{"Fault": "slow", "Ms": 4000, "Count": 1, "Action": "ConvPinned"}');
	SELECT zim_conv_pinned_enqueue('s_a', ARRAY['s_b'], 0, false)});
ok($node->poll_query_until('postgres', q{
		SELECT state = 'sending' AND pid > 0 FROM zim_pin_worker WHERE database = 'postgres'}),
	'while a request is out the worker is "sending", with its pid');
ok($node->poll_query_until('postgres', q{
		SELECT state = 'idle' AND jobs_finished = 3 FROM zim_pin_worker WHERE database = 'postgres'}),
	'... then idle, three jobs finished');

# an error that is no job's: the worker backs off, and says until when
$node->safe_psql('postgres', q{
	CREATE FUNCTION refuse_claims() RETURNS trigger LANGUAGE plpgsql AS
	$$ BEGIN RAISE EXCEPTION 'injected: the queue cannot be claimed'; END $$;
	CREATE TRIGGER refuse_claims BEFORE UPDATE ON zim_pin_job
	FOR EACH ROW EXECUTE FUNCTION refuse_claims();
	SELECT zim_conv_pinned_enqueue('s_a', ARRAY['s_b'], 0, true)});
ok($node->poll_query_until('postgres', q{
		SELECT state = 'backing off' FROM zim_pin_worker WHERE database = 'postgres'}),
	'an error claiming: "backing off"');
$r = $node->safe_psql('postgres', q{
	SELECT pid > 0, last_error, backoff_until > since, last_error_at >= since - interval '1 second'
	FROM zim_pin_worker WHERE database = 'postgres'});
is($r, 't|injected: the queue cannot be claimed|t|t',
	'... with the error, and until when it waits');
$r = $node->safe_psql('postgres', $monitor);
like($r, qr/^backing off\|injected: the queue cannot be claimed\|t$/, '... and the monitoring query alerts');
$node->safe_psql('postgres', q{DROP TRIGGER refuse_claims ON zim_pin_job});
ok($node->poll_query_until('postgres', q{
		SELECT w.state = 'idle' AND j.state = 'done'
		FROM zim_pin_worker w, zim_pin_job j
		WHERE w.database = 'postgres' AND j.job_id = 4}),
	'the error gone, the job is sent and the worker is idle again');
is($node->safe_psql('postgres', q{SELECT last_error FROM zim_pin_worker WHERE database = 'postgres'}),
	'injected: the queue cannot be claimed', '... the last error stays, with its time');

# waiting for the configuration
$node->append_conf('postgresql.conf', "zim_pin.app_id = ''\n");
$node->reload;
$node->safe_psql('postgres', q{SELECT zim_conv_pinned_enqueue('s_a', ARRAY['s_b'], 0, false)});
ok($node->poll_query_until('postgres', q{
		SELECT state = 'waiting for configuration' FROM zim_pin_worker WHERE database = 'postgres'}),
	'without an AppId: "waiting for configuration"');
$r = $node->safe_psql('postgres', q{
	SELECT pid IS NULL, last_error, backoff_until > since FROM zim_pin_worker WHERE database = 'postgres'});
is($r, 't|zim_pin.app_id is not set|t', '... not running, saying what is missing and when it looks again');
like($node->safe_psql('postgres', $monitor), qr/\|t$/, '... and the monitoring query alerts');
$node->append_conf('postgresql.conf', "zim_pin.app_id = '$ENV{ZIM_APP_ID}'\n");
$node->reload;
ok($node->poll_query_until('postgres', q{
		SELECT w.state = 'idle' AND (SELECT count(*) FROM zim_pin_job WHERE state = 'pending') = 0
		FROM zim_pin_worker w WHERE w.database = 'postgres'}),
	'configured again: the job is sent, the worker idle');

# stopped by an error (terminated), then started again on the next commit
my $pid = $node->safe_psql('postgres', q{
	SELECT double('Fault', '{"Fault": "slow", "Ms": 4000, "Count": 1, "Action": "ConvPinned"}');
	SELECT zim_conv_pinned_enqueue('s_a', ARRAY['s_b'], 0, true)});
ok($node->poll_query_until('postgres', q{
		SELECT state = 'sending' FROM zim_pin_worker WHERE database = 'postgres'}),
	'a worker sending ...');
$node->safe_psql('postgres', q{
	SELECT pg_terminate_backend(pid) FROM zim_pin_worker WHERE database = 'postgres'});
ok($node->poll_query_until('postgres', q{
		SELECT state IN ('stopped', 'starting', 'sending', 'idle') AND last_error LIKE 'terminating background worker%'
		FROM zim_pin_worker WHERE database = 'postgres'}),
	'... terminated: its last error says so');
ok($node->poll_query_until('postgres', q{
		SELECT w.state = 'idle' AND (SELECT count(*) FROM zim_pin_job WHERE state = 'pending') = 0
		FROM zim_pin_worker w WHERE w.database = 'postgres'}),
	'... and a new worker sends the job');

# refusing to run as another role (ALTER DATABASE ... SET role)
$node->safe_psql('postgres', q{
	CREATE ROLE zim_someone;
	CREATE DATABASE wdb_role});
$node->stop;
$node->append_conf('postgresql.conf', "zim_pin.worker_database = 'wdb_role'\n");
$node->start;
$node->safe_psql('wdb_role', q{CREATE EXTENSION zim_pin; ALTER DATABASE wdb_role SET role = 'zim_someone'});
$node->safe_psql('postgres', q{SELECT 1});
$node->restart;
ok($node->poll_query_until('postgres', q{
		SELECT state = 'refused to run' FROM zim_pin_worker WHERE database = 'wdb_role'}),
	'a database that sets role: "refused to run"');
like($node->safe_psql('postgres', q{SELECT last_error FROM zim_pin_worker WHERE database = 'wdb_role'}),
	qr/^zim_pin worker refuses to run as role "zim_someone" in database "wdb_role"$/,
	'... and says as whom');
$node->stop;

# --- no worker database; not preloaded ----------------------------------------
$node = zim_node('nodb');
is($node->safe_psql('postgres', q{SELECT database IS NULL, pid IS NULL, state FROM zim_pin_worker}),
	't|t|disabled', 'no zim_pin.worker_database: the launcher\'s row alone, "disabled"');
$node->stop;

$node = zim_node('nopreload', preload => 0, secret_file => 1);
is($node->safe_psql('postgres', q{SELECT database IS NULL, pid IS NULL, state FROM zim_pin_worker}),
	't|t|not preloaded', 'without preloading: "not preloaded"');
$node->stop;

done_testing();
