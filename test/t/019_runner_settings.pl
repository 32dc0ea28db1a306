# Hardening, part 2, items 2 and 3: a runner's own settings, and the secret
# outside the GUC mask.
#
# zim_pin_run_jobs is SECURITY DEFINER, and the worker runs as a superuser
# in a database whose owner may ALTER DATABASE ... SET: both must send with
# the server's configured timeouts and retries, whatever a session, a role
# or a database says, and the worker must run only as the superuser it
# connected as.  With the double answering in 300 ms, a 1 ms timeout would
# spend every attempt; each route below sets one and expects the job done
# in one attempt.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use ZimTest;

my $node = zim_node('runner_settings', conf => <<'CONF');
zim_pin.worker_database = 'owned'
zim_pin.max_retries = 0
log_min_error_statement = panic
log_statement = none
CONF
$node->safe_psql('postgres', q{SELECT double('Reset'); SELECT register('s_a', 's_b')});
$node->safe_psql('postgres', q{CREATE ROLE runner LOGIN;
	GRANT EXECUTE ON FUNCTION zim_pin_run_jobs(integer) TO runner});
$node->safe_psql('postgres', q{SELECT double('Config', '{"LatencyMs": 300}')});

sub last_job
{
	my ($db) = @_;
	return $node->safe_psql($db, q{SELECT state || ' ' || attempts || ' ' || coalesce(last_code::text, '-') FROM zim_pin_job ORDER BY job_id DESC LIMIT 1});
}

# --- zim_pin_run_jobs: a session's SET -----------------------------------------
$node->safe_psql('postgres', q{SELECT zim_conv_pinned_enqueue('s_a', ARRAY['g1'], 2, true)});
my $out = $node->safe_psql('postgres', q{
	SET zim_pin.timeout_ms = 1; SET zim_pin.connect_timeout_ms = 1; SET zim_pin.max_retries = 10;
	SELECT zim_pin_run_jobs();
	SELECT current_setting('zim_pin.timeout_ms') || ' ' || current_setting('zim_pin.connect_timeout_ms') || ' ' || current_setting('zim_pin.max_retries');
}, extra_params => ['-U', 'runner']);
is($out, "1\n1ms 1ms 10", "a runner's SET zim_pin.timeout_ms = 1 does not reach the job, and is its own again after the call");
is(last_job('postgres'), 'done 1 0', '... the job was sent with the server\'s timeout, in one attempt');

# --- zim_pin_run_jobs: a role's setting ----------------------------------------
$node->safe_psql('postgres', q{ALTER ROLE runner SET zim_pin.timeout_ms = 1; ALTER ROLE runner SET zim_pin.connect_timeout_ms = 1});
$node->safe_psql('postgres', q{SELECT zim_conv_pinned_enqueue('s_a', ARRAY['g2'], 2, true)});
is($node->safe_psql('postgres', q{SHOW zim_pin.timeout_ms; SELECT zim_pin_run_jobs()}, extra_params => ['-U', 'runner']),
	"1ms\n1", "ALTER ROLE runner SET zim_pin.timeout_ms = 1: the role's sessions have it, zim_pin_run_jobs does not");
is(last_job('postgres'), 'done 1 0', '... the job was sent in one attempt');
# the same role still gets its own value for its synchronous calls
$node->safe_psql('postgres', q{GRANT EXECUTE ON FUNCTION zim_conv_pinned(text, text[], integer, boolean) TO runner});
my ($ret, $o, $e) = $node->psql('postgres', q{SELECT * FROM zim_conv_pinned('s_a', ARRAY['g9'], 2, true)},
	extra_params => ['-U', 'runner']);
like($e, qr/08006|timed out/, "... while the role's synchronous calls use its 1 ms (they are its own)");
$node->safe_psql('postgres', q{ALTER ROLE runner RESET ALL});

# --- zim_pin_run_jobs: a database's setting ------------------------------------
$node->safe_psql('postgres', q{CREATE DATABASE other; ALTER DATABASE other SET zim_pin.timeout_ms = 1});
$node->safe_psql('other', q{CREATE EXTENSION zim_pin; GRANT EXECUTE ON FUNCTION zim_pin_run_jobs(integer) TO runner;
	SELECT zim_conv_pinned_enqueue('s_a', ARRAY['g3'], 2, true)});
is($node->safe_psql('other', q{SELECT zim_pin_run_jobs()}, extra_params => ['-U', 'runner']), '1',
	'ALTER DATABASE other SET zim_pin.timeout_ms = 1: zim_pin_run_jobs there sends anyway');
is(last_job('other'), 'done 1 0', '... in one attempt');

# --- the worker: its database owner's settings ----------------------------------
$node->safe_psql('postgres', q{CREATE ROLE owner LOGIN; CREATE DATABASE owned OWNER owner});
$node->safe_psql('owned', q{CREATE EXTENSION zim_pin});
# everything a database owner may set for her database
$node->safe_psql('owned', q{
	ALTER DATABASE owned SET zim_pin.timeout_ms = 1;
	ALTER DATABASE owned SET zim_pin.connect_timeout_ms = 1;
	ALTER DATABASE owned SET zim_pin.max_retries = 10;
	ALTER DATABASE owned SET statement_timeout = 1;
	ALTER DATABASE owned SET lock_timeout = 1;
	ALTER DATABASE owned SET default_transaction_read_only = on;
	ALTER DATABASE owned SET default_transaction_isolation = serializable;
}, extra_params => ['-U', 'owner']);
# the test's own sessions in "owned" override its settings from the client
my $owned = $node->connstr('owned') . q{ options='-c statement_timeout=0 -c lock_timeout=0 -c default_transaction_read_only=off -c default_transaction_isolation=read\\\\ committed -c role=none'};
sub oq
{
	my ($sql) = @_;
	return $node->safe_psql('owned', $sql, connstr => $owned);
}
sub wait_state
{
	my ($db, $want, $secs) = @_;
	my $got = '';
	for (1 .. $secs * 10)
	{
		$got = oq(q{SELECT state FROM zim_pin_job ORDER BY job_id DESC LIMIT 1});
		return $got if $got eq $want;
		Time::HiRes::sleep(0.1);
	}
	return $got;
}
oq(q{SELECT zim_conv_pinned_enqueue('s_a', ARRAY['g4'], 2, true)});
is(wait_state('owned', 'done', 30), 'done',
	"the worker drains a database whose owner set its timeouts, retries, statement_timeout, read-only and serializable");
is(oq(q{SELECT attempts || ' ' || last_code FROM zim_pin_job}), '1 0',
	'... in one attempt, with the server\'s timeouts');

# --- the worker refuses to run as another role -------------------------------------
my $log_offset = -s $node->logfile;
# a new worker reads the database's settings: wait for the last one to leave
for (1 .. 100)
{
	last if $node->safe_psql('postgres', q{SELECT count(*) FROM pg_stat_activity WHERE application_name = 'zim_pin worker'}) eq '0';
	Time::HiRes::sleep(0.1);
}
$node->safe_psql('owned', q{ALTER DATABASE owned SET role = owner}, connstr => $owned . ' user=owner');
oq(q{SELECT zim_conv_pinned_enqueue('s_a', ARRAY['g5'], 2, true)});
my $refused = 0;
for (1 .. 100)
{
	$refused = 1, last if $node->log_contains(qr/zim_pin worker refuses to run as role "owner" in database "owned"/, $log_offset);
	Time::HiRes::sleep(0.1);
}
ok($refused, 'ALTER DATABASE owned SET role = owner: the worker refuses to run as owner, and says why');
is(oq(q{SELECT state || ' ' || attempts FROM zim_pin_job ORDER BY job_id DESC LIMIT 1}), 'pending 0',
	'... and sends nothing');
$node->safe_psql('owned', q{ALTER DATABASE owned RESET role}, connstr => $owned . ' user=owner');
is(wait_state('owned', 'done', 30), 'done', '... until the setting is gone: then the job is sent');

# --- the secret, from a role's or a database's setting -------------------------
$log_offset = -s $node->logfile;
my $probe = 'probe-' . join('', map { int(rand(10)) } 1 .. 20);
for my $sql ("ALTER ROLE runner SET zim_pin.server_secret = '$probe'",
	"ALTER DATABASE other SET zim_pin.server_secret = '$probe'",
	"SET zim_pin.server_secret = '$probe'")
{
	my ($r, $so, $se) = $node->psql('postgres', $sql, extra_params => ['-v', 'VERBOSITY=verbose']);
	like($se, qr/ERROR:  55000: zim_pin.server_secret can only be set in the server's configuration file/,
		"refused with 55000: " . ($sql =~ s/'[^']*'/'...'/r));
	unlike($se, qr/\Q$probe\E/, '... and the message does not hold the value');
}
is($node->safe_psql('postgres', qq{SELECT count(*) FROM pg_db_role_setting WHERE array_to_string(setconfig, ' ') LIKE '%$probe%'}),
	'0', 'the value is stored nowhere');
my $log = slurp_file($node->logfile, $log_offset);
unlike($log, qr/\Q$probe\E/, 'the value is in no server log line');
like($log, qr/zim_pin.server_secret can only be set/, '... which has the refusals');

$node->stop;
done_testing();
