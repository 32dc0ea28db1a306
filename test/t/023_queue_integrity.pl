# Hardening, part 2: the queue's integrity (items 5 to 7 and 9).
#
#  - A stored job that cannot be built (inserted by hand or restored: a null
#    element, arrays of different lengths, a bad type, an id not valid in
#    UTF-8) fails alone with its failure rows; the others go on.
#  - A claimer's liveness is read afresh: zim_pin_run_jobs, in a transaction
#    whose activity snapshot predates the worker, takes none of its claims.
#  - A job larger than a lease is sent in chunks with the lease renewed
#    between them: each request once, and other users' jobs go first.
#  - Rows inserted in a savepoint of the calling transaction are not sent.
#  - A renewal whose commit fails changes no token: no false "lease ran out".
#  - HTTP 4xx and unreadable answers fail a queued job at once, as they fail
#    the synchronous call; 5xx is retried.
#  - A configuration error in the middle of a batch is charged to no job.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use ZimTest;

my $node = zim_node('integrity', secret_file => 1, conf => <<'CONF');
zim_pin.worker_database = 'postgres'
zim_pin.job_lease = '3s'
zim_pin.timeout_ms = 800
CONF
$node->safe_psql('postgres', q{SELECT double('Reset')});
my @users = (qw(p_a p_b lv_1 sp_1 rn_1 rn_2 rn_3 f4 fbad f5 cf_1 huge), map { "small$_" } 1 .. 5);
is(sql_out('postgres', 'SELECT register(' . join(', ', map { "'$_'" } @users) . ')'), '0',
	'users registered');

# run_jobs-only parts use a database the worker does not drain
$node->safe_psql('postgres', q{CREATE DATABASE rj});
$node->safe_psql('postgres',
	q{CREATE DATABASE sqlascii ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0});
$node->safe_psql($_, q{CREATE EXTENSION zim_pin}) for qw(rj sqlascii);

# the output of sql, or its error: a failure fails the check, not the file
sub sql_out
{
	my ($db, $sql) = @_;
	my ($rc, $out, $err) = $node->psql($db, $sql);
	return $rc == 0 ? $out : "ERROR: $err";
}

sub sent_to
{
	my ($user) = @_;
	return $node->safe_psql('postgres', qq{SELECT count(*) FROM jsonb_array_elements(double('State')->'Requests') r
		WHERE r->>'Action' = 'ConvPinned' AND r->>'User' = '$user'});
}

sub set_conf
{
	my (%kv) = @_;
	$node->safe_psql('postgres', "ALTER SYSTEM SET $_ = '$kv{$_}'") for sort keys %kv;
	$node->reload;
	usleep(300_000);
}

# --- 5: jobs that cannot be built fail alone --------------------------------
# SQL_ASCII: "caf\xe9" is no UTF-8; the others would break any database.
$node->safe_psql('sqlascii', q{
	INSERT INTO zim_pin_job (from_user_id, conv_ids, conv_types, pinned) VALUES
	  ('p_a', ARRAY[E'caf\xe9'], ARRAY[2], true),
	  ('p_a', ARRAY['g1', NULL], ARRAY[2, 2], true),
	  ('p_a', ARRAY['g1', 'g2'], ARRAY[2], true),
	  ('p_a', ARRAY['g1'], ARRAY[5], true),
	  ('p_a', ARRAY[repeat('x', 33)], ARRAY[2], true),
	  ('p a/', ARRAY['g1'], ARRAY[2], true),
	  ('p_a', ARRAY['g3'], ARRAY[2], true),
	  ('p_b', ARRAY['g1'], ARRAY[2], true)});
is(sql_out('sqlascii', q{SELECT zim_pin_run_jobs()}), '8',
	'SQL_ASCII: zim_pin_run_jobs finishes all eight jobs, the poison ones included');
is(sql_out('sqlascii', q{SELECT string_agg(state || ' ' || attempts || ' ' || coalesce(last_message, ''), E'\n' ORDER BY job_id) FROM zim_pin_job}),
	join("\n",
		'failed 1 cannot be sent: 22021: element 1 of conv_ids cannot be converted to UTF-8',
		'failed 1 cannot be sent: 22004: element 2 of conv_ids is null',
		'failed 1 cannot be sent: 22023: conv_ids has 2 elements and conv_types has 1',
		'failed 1 cannot be sent: 22023: element 1 of conv_types is 5, not 0 or 2',
		'failed 1 cannot be sent: 22023: element 1 of conv_ids is empty or longer than 32 bytes in UTF-8',
		'failed 1 cannot be sent: 22023: from_user_id is not a user id ZIM accepts',
		'done 1 success',
		'done 1 success'),
	'... each poison job failed at its first attempt, saying why; the jobs behind it were sent');
is(sql_out('sqlascii', q{SELECT string_agg(f.job_id - (SELECT min(job_id) FROM zim_pin_job) + 1 || ':' || f.conv_type, ' ' ORDER BY f.job_id, f.conv_id) FROM zim_pin_job_failure f}),
	'1:2 2:2 3:2 4:5 5:2 6:2', '... with a failure row for each conversation it names (not the null one)');
is(sent_to('p_a') . ' ' . sent_to('p_b'), '1 1', '... and nothing of the poison jobs went out');

# the worker, too, in a UTF-8 database: it does not roll its claim back.
# A row inserted by hand wakes no one; the enqueued job's commit wakes the
# worker (which may have left, idle, long before).
$node->safe_psql('postgres', q{
	INSERT INTO zim_pin_job (from_user_id, conv_ids, conv_types, pinned) VALUES
	  ('p_a', ARRAY[NULL::text], ARRAY[2], true);
	SELECT zim_conv_pinned_enqueue('p_b', ARRAY['g4'], 2, true)});
ok($node->poll_query_until('postgres', q{SELECT count(*) = 2 FROM zim_pin_job WHERE state <> 'pending'}),
	'the worker finished both jobs');
is(sql_out('postgres', q{SELECT string_agg(from_user_id || ' ' || state || ' ' || attempts, ', ' ORDER BY job_id) FROM zim_pin_job}),
	'p_a failed 1, p_b done 1', '... the poison one failed alone, at its first attempt');
$node->safe_psql('postgres', q{DELETE FROM zim_pin_job});

# --- 9: rows of a savepoint are the caller's, not yet committed -------------
my $out = sql_out('rj', q{
	BEGIN;
	SAVEPOINT s;
	INSERT INTO zim_pin_job (from_user_id, conv_ids, conv_types, pinned) VALUES ('sp_1', ARRAY['g1'], ARRAY[2], true);
	RELEASE s;
	SAVEPOINT t;
	INSERT INTO zim_pin_job (from_user_id, conv_ids, conv_types, pinned) VALUES ('sp_1', ARRAY['g2'], ARRAY[2], true);
	SELECT zim_pin_run_jobs();
	ROLLBACK TO t;
	SELECT zim_pin_run_jobs();
	ROLLBACK;
	SELECT count(*) FROM zim_pin_job;});
is($out, "0\n0\n0", 'zim_pin_run_jobs sends no row inserted in a savepoint of its own transaction');
is(sent_to('sp_1'), '0', '... nothing went out for them');

# --- 6: liveness read afresh -------------------------------------------------
# A transaction reads pg_stat_activity first (its snapshot then holds no
# worker); the worker starts after, claims a job and sends it (2 s); then the
# same transaction runs zim_pin_run_jobs, which must see the worker alive.
set_conf('zim_pin.job_lease' => '30s', 'zim_pin.timeout_ms' => '10000');
$node->safe_psql('postgres', q{SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'zim_pin worker'});
$node->poll_query_until('postgres', q{SELECT count(*) = 0 FROM pg_stat_activity WHERE application_name = 'zim_pin worker'});
$node->safe_psql('postgres', q{SELECT double('Fault', '{"Fault": "slow", "Ms": 2000, "Match": "lv_1"}')});
my %bg = (out => '', err => '');
$bg{h} = IPC::Run::start(
	[ 'psql', '-XAtq', '-d', $node->connstr('postgres'), '-c', q{
DO $$
DECLARE n int; w int;
BEGIN
  SELECT count(*) INTO w FROM pg_stat_activity WHERE application_name = 'zim_pin worker';
  RAISE NOTICE 'workers in snapshot: %', w;
  FOR i IN 1 .. 200 LOOP  -- liveness probe: wait for the worker's claim
    EXIT WHEN EXISTS (SELECT 1 FROM zim_pin_job WHERE claimed_by IS NOT NULL AND state = 'pending');
    PERFORM pg_sleep(0.05);
  END LOOP;
  SELECT zim_pin_run_jobs() INTO n;
  RAISE NOTICE 'run_jobs took: %', n;
END $$;} ],
	'>', \$bg{out}, '2>', \$bg{err});
$node->poll_query_until('postgres', q{SELECT count(*) = 1 FROM pg_stat_activity WHERE query LIKE '%liveness probe%' AND pid <> pg_backend_pid()});
usleep(200_000);
$node->safe_psql('postgres', q{SELECT zim_conv_pinned_enqueue('lv_1', ARRAY['g1'], 2, true)});
$bg{h}->finish;
like($bg{err}, qr/workers in snapshot: 0/, 'the transaction\'s activity snapshot holds no worker');
like($bg{err}, qr/run_jobs took: 0/, '... and its zim_pin_run_jobs took nothing from the worker that started since');
ok($node->poll_query_until('postgres', q{SELECT state = 'done' AND attempts = 1 FROM zim_pin_job WHERE from_user_id = 'lv_1'}),
	'the worker finished the job at its first attempt');
is(sent_to('lv_1'), '1', '... and it was sent once');
$node->safe_psql('postgres', q{DELETE FROM zim_pin_job});

# --- 7: a job larger than a lease --------------------------------------------
# 1,600 unpins are 80 requests, 4 s at 20/s, with a 3 s lease; at 800 ms a
# request at the worst, a chunk holds 30.  zim_pin_run_jobs, called every
# 0.25 s, must take nothing; five small users' jobs go out beside it.
set_conf('zim_pin.job_lease' => '3s', 'zim_pin.timeout_ms' => '800');
$node->safe_psql('postgres', q{BEGIN;
	SELECT zim_conv_pinned_enqueue('huge', ARRAY(SELECT 'h' || i FROM generate_series(1, 1600) i), 2, false);
	SELECT zim_conv_pinned_enqueue('small' || i, ARRAY['g1'], 2, true) FROM generate_series(1, 5) i;
	COMMIT});
my ($t0, $taken) = (time, 0);
while (time - $t0 < 30
	&& $node->safe_psql('postgres', q{SELECT count(*) FROM zim_pin_job WHERE state = 'pending'}) ne '0')
{
	$taken += sql_out('postgres', q{SELECT zim_pin_run_jobs()});
	usleep(250_000);
}
is($taken, 0, 'zim_pin_run_jobs took nothing from the worker');
is(sql_out('postgres', q{SELECT string_agg(state || ' ' || attempts, ', ' ORDER BY job_id) FROM zim_pin_job}),
	join(', ', ('done 1') x 6), 'the worker finished every job at its first attempt');
is(sent_to('huge'), '80', 'the huge job took its 80 requests, none sent twice');
is(join(',', map { sent_to("small$_") } 1 .. 5), '1,1,1,1,1', 'each small job was sent once');
is(sql_out('postgres', q{SELECT count(*) FROM zim_pin_job s, zim_pin_job h
	WHERE h.from_user_id = 'huge' AND s.from_user_id LIKE 'small%' AND s.finished_at < h.finished_at}),
	'5', '... and finished before the huge one');
$node->safe_psql('postgres', q{DELETE FROM zim_pin_job});

# --- 9: a renewal whose commit fails -----------------------------------------
# 10 s a request at the worst and a 3 s lease: one request a chunk; three
# jobs, so the lease of the rest is renewed after the first.  A deferred
# trigger fails that commit, once.
set_conf('zim_pin.timeout_ms' => '10000');
$node->safe_psql('postgres', q{
	CREATE SEQUENCE public.renewals;
	CREATE FUNCTION public.fail_first_renewal() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
	  IF pg_catalog.nextval('public.renewals') = 1 THEN
	    RAISE EXCEPTION 'renewal refused at commit';
	  END IF;
	  RETURN NULL;
	END $$;
	CREATE CONSTRAINT TRIGGER fail_renewal AFTER UPDATE ON zim_pin_job
	  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
	  WHEN (OLD.claimed_by = NEW.claimed_by AND OLD.claimed_until <> NEW.claimed_until
	        AND OLD.attempts = NEW.attempts)
	  EXECUTE FUNCTION public.fail_first_renewal()});
my $log_offset = -s $node->logfile;
$node->safe_psql('postgres', q{BEGIN;
	SELECT zim_conv_pinned_enqueue('rn_' || i, ARRAY['g1'], 2, true) FROM generate_series(1, 3) i;
	COMMIT});
ok($node->poll_query_until('postgres', q{SELECT count(*) = 3 FROM zim_pin_job WHERE state = 'done'}),
	'the three jobs were done after the renewal failed to commit');
ok($node->log_contains(qr/renewal refused at commit/, $log_offset), '... which the worker logged');
ok(!$node->log_contains(qr/lease ran out/, $log_offset), '... and it logged no lease that ran out');
$node->safe_psql('postgres', q{DROP TRIGGER fail_renewal ON zim_pin_job; DELETE FROM zim_pin_job});

# --- 9: HTTP 4xx and unreadable answers fail a queued job at once ------------
$node->safe_psql('postgres', q{SELECT double('Fault', jsonb_build_object('Fault', 'raw', 'Match', 'f4',
	'Raw', E'HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\nnot found'))});
$node->safe_psql('postgres', q{SELECT double('Fault', '{"Fault": "nonjson", "Match": "fbad"}')});
$node->safe_psql('postgres', q{SELECT double('Fault', '{"Fault": "http503", "Count": 5, "Match": "f5"}')});
$node->safe_psql('rj', q{SELECT zim_conv_pinned_enqueue(u, ARRAY['g1'], 2, true) FROM unnest(ARRAY['f4', 'fbad', 'f5']) u});
$node->safe_psql('rj', q{SELECT zim_pin_run_jobs()});
is(sql_out('rj', q{SELECT string_agg(from_user_id || ' ' || state || ' ' || attempts || ' ' || split_part(last_message, ':', 1), E'\n' ORDER BY job_id) FROM zim_pin_job}),
	"f4 failed 1 HTTP status 404\nfbad failed 1 The answer is not JSON\nf5 pending 1 HTTP status 503",
	'404 and an unreadable answer fail the job at once; 503 is tried again later');
is(sql_out('rj', q{SELECT count(*) FROM zim_pin_job_failure}), '2', '... with their failure rows');
$node->safe_psql('postgres', q{SELECT double('Fault', '{"Fault": "clear"}')});
$node->safe_psql('rj', q{DELETE FROM zim_pin_job});

# --- 9: a configuration error in the middle of a batch -----------------------
# One user's unpin, then pin: two sends.  The unpin takes 2 s; meanwhile the
# secret file gets group access, so the pin's send finds no usable secret.
my $secret = $node->data_dir . '/zim_secret';
$node->safe_psql('postgres', q{SELECT double('Fault', '{"Fault": "slow", "Ms": 2000, "Match": "cfslow"}')});
$node->safe_psql('postgres', q{BEGIN;
	SELECT zim_conv_pinned_enqueue('cf_1', ARRAY['cfslow'], 2, false);
	SELECT zim_conv_pinned_enqueue('cf_1', ARRAY['g2'], 2, true);
	COMMIT});
$node->poll_query_until('postgres', q{SELECT count(*) = 2 FROM zim_pin_job WHERE claimed_by IS NOT NULL});
chmod 0640, $secret;
ok($node->poll_query_until('postgres', q{SELECT count(*) = 2 FROM zim_pin_job WHERE claimed_by IS NULL}),
	'the worker gave the jobs back when the secret became unusable mid-batch');
is(sql_out('postgres', q{SELECT string_agg(state || ' ' || attempts || ' ' || coalesce(last_message, '-'), ', ' ORDER BY job_id) FROM zim_pin_job}),
	'pending 0 -, pending 0 -', '... unsent and uncharged');
chmod 0600, $secret;
is(sql_out('postgres', q{SELECT zim_pin_run_jobs()}), '2', 'with the secret back, both jobs are sent');
is(sql_out('postgres', q{SELECT string_agg(state || ' ' || attempts, ', ' ORDER BY job_id) FROM zim_pin_job}),
	'done 1, done 1', '... each charged one attempt, the one that went through');
$node->safe_psql('postgres', q{DELETE FROM zim_pin_job});

# the same in zim_pin_run_jobs: a warning, and the jobs back in the queue
$node->safe_psql('postgres', q{SELECT double('Fault', '{"Fault": "slow", "Ms": 2000, "Match": "cfslow"}')});
$node->safe_psql('rj', q{BEGIN;
	SELECT zim_conv_pinned_enqueue('cf_1', ARRAY['cfslow'], 2, false);
	SELECT zim_conv_pinned_enqueue('cf_1', ARRAY['g3'], 2, true);
	COMMIT});
%bg = (out => '', err => '');
$bg{h} = IPC::Run::start([ 'psql', '-XAtq', '-d', $node->connstr('rj'), '-c', 'SELECT zim_pin_run_jobs()' ],
	'>', \$bg{out}, '2>', \$bg{err});
usleep(700_000);
chmod 0640, $secret;
$bg{h}->finish;
chmod 0600, $secret;
like($bg{err}, qr/WARNING:  sending queued jobs stopped: the file named by zim_pin.server_secret_file has group or world access/,
	'zim_pin_run_jobs warns that it stopped');
is($bg{out}, "0\n", '... finished no job');
is(sql_out('rj', q{SELECT string_agg(state || ' ' || attempts, ', ' ORDER BY job_id) FROM zim_pin_job}),
	'pending 0, pending 0', '... and gave them back uncharged');

$node->stop;
done_testing();
