# Hardening, part 2, item 4: a cancel inside zim_pin_run_jobs.
#
# zim_pin_run_jobs sends in an internal subtransaction.  A cancel or
# statement_timeout while a request hangs must roll that back before it goes
# on up, so that the caller is left in the state it would be after any
# other error: in autocommit, in an explicit transaction (whose ROLLBACK
# works), and under a PL/pgSQL handler that catches query_canceled (which
# goes on in its own transaction, with its own settings).  Each case runs
# once by statement_timeout and once by pg_cancel_backend; after each, the
# session works, holds no claim, its settings are as before, and the job is
# sent by the next call.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use ZimTest;

my $node = zim_node('cancel_run');
$node->safe_psql('postgres', q{SELECT double('Reset'); SELECT register('r_a', 'r_b')});
$node->safe_psql('postgres', q{CREATE ROLE runner LOGIN;
	GRANT EXECUTE ON FUNCTION zim_pin_run_jobs(integer) TO runner;
	GRANT SELECT ON zim_pin_job TO runner});

# requests the double has received for ConvPinned since its last reset
sub convpinned_requests
{
	return $node->safe_psql('postgres',
		q{SELECT count(*) FROM jsonb_array_elements(double('State')->'Requests') r WHERE r->>'Action' = 'ConvPinned'});
}

# in $bg, send $sql, and return what psql printed once it has run
sub run_in
{
	my ($bg, $sql, $cancel_pid) = @_;
	$bg->{stdout} = '';
	$bg->{stderr} = '';
	my $before = convpinned_requests();
	$bg->{stdin} .= "$sql\n\\echo __DONE__\n";
	$bg->{run}->pump_nb;
	if ($cancel_pid)
	{
		# cancel once the request hangs at the double, inside the subtransaction
		for (1 .. 200)
		{
			last if convpinned_requests() > $before;
			Time::HiRes::sleep(0.05);
		}
		Time::HiRes::sleep(0.2);
		$node->safe_psql('postgres', "SELECT pg_cancel_backend($cancel_pid)");
	}
	$bg->{timeout}->start(60);
	eval {
		$bg->{run}->pump until $bg->{stdout} =~ /__DONE__/ || $bg->{timeout}->is_expired;
	};
	return ($bg->{stdout}, $bg->{stderr});
}

my @cases = (
	[ 'autocommit',
		q{SELECT zim_pin_run_jobs();},
		'' ],
	[ 'an explicit transaction',
		q{BEGIN; SELECT zim_pin_run_jobs();},
		q{ROLLBACK;} ],
	[ 'a PL/pgSQL handler',
		q{DO $$ BEGIN PERFORM zim_pin_run_jobs(); EXCEPTION WHEN query_canceled THEN RAISE NOTICE 'caught %', SQLSTATE; END $$;},
		'' ],
);
my $n = 0;
for my $c (@cases)
{
	my ($what, $call, $after) = @$c;
	for my $how ('statement_timeout', 'pg_cancel_backend')
	{
		$n++;
		my $label = "$what, by $how";
		$node->safe_psql('postgres', qq{SELECT zim_conv_pinned_enqueue('r_a', ARRAY['g$n'], 2, true)});
		$node->safe_psql('postgres', q{SELECT double('Fault', '{"Fault": "hang", "Count": 1, "Action": "ConvPinned"}')});

		my $bg = $node->background_psql('postgres', on_error_stop => 0,
			extra_params => ['-U', 'runner']);
		my $pid = $bg->query_safe('SELECT pg_backend_pid()');
		chomp $pid;
		$bg->query_safe(q{SET zim_pin.max_retries = 2});
		my $settings_sql = q{SELECT current_setting('search_path') || ' / ' || current_setting('zim_pin.max_retries') || ' / ' || current_setting('statement_timeout')};
		my $settings = $bg->query_safe($settings_sql);
		chomp $settings;

		my $sql = $how eq 'statement_timeout'
			? ($what eq 'an explicit transaction'
				? q{BEGIN; SET LOCAL statement_timeout = '1s'; SELECT zim_pin_run_jobs();}
				: qq{SET statement_timeout = '1s'; $call RESET statement_timeout;})
			: $call;
		my $t0 = time;
		my ($out, $err) = run_in($bg, $sql, $how eq 'pg_cancel_backend' ? $pid : undef);
		if ($what eq 'a PL/pgSQL handler')
		{
			like($err, qr/NOTICE:  caught 57014/, "$label: the handler caught 57014");
		}
		else
		{
			like($err, qr/ERROR:  canceling statement due to (statement timeout|user request)/,
				"$label: the call ends with 57014");
		}
		cmp_ok(time - $t0, '<', 20, "$label: ... promptly");
		($out, $err) = run_in($bg, $after) if $after;
		unlike($err, qr/FATAL|unexpected state|terminat/i, "$label: no FATAL" . ($after ? " on $after" : ''));

		($out, $err) = run_in($bg, q{SELECT 'alive', count(*) >= 0 FROM zim_pin_job;} . "\n" . $settings_sql . ';');
		like($out, qr/alive\|t/, "$label: the session works, and finds zim_pin_job on its own search_path");
		unlike($err, qr/ERROR/, "$label: ... without an error") or diag($err);
		like($out, qr/\Q$settings\E/, "$label: its settings are as before ($settings)");
		is($node->safe_psql('postgres', qq{SELECT count(*) FROM zim_pin_job WHERE claimed_by = $pid}), '0',
			"$label: it holds no claim");
		$bg->quit;

		$node->safe_psql('postgres', q{SELECT double('Fault', '{"Fault": "clear"}')});
		is($node->safe_psql('postgres', q{SELECT zim_pin_run_jobs()}), '1', "$label: the next call sends the job");
	}
}

ok(!$node->log_contains('terminated by signal'), 'no backend crashed');
$node->stop;
done_testing();
