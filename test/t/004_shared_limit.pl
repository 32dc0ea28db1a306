# One limit for the whole server: sessions together never exceed
# zim_pin.requests_per_second in any sliding second as the double counts
# them; a waiting session is cancelled by statement_timeout; a reload
# changes the rate; a rate-limit answer slows every session down; chunks go
# out concurrently; and zim_pin_stats matches what the double received.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use ZimTest;

my $node = zim_node('shared');
$node->safe_psql('postgres', q{
	SELECT double('Reset');
	SELECT register('s1', 's2', 's3', 's4', 'peer');
	SELECT zim_pin_stats_reset();
});

sub double_state
{
	my $json = $node->safe_psql('postgres', q{SELECT double('State')});
	return $json;
}

sub state_field
{
	my ($expr) = @_;
	return $node->safe_psql('postgres', "SELECT $expr FROM double('State') s");
}

# start psql sessions in the background; returns handles and outputs
sub start_sessions
{
	my @sql = @_;
	my @runs;
	for my $i (0 .. $#sql)
	{
		my %r = (out => '', err => '');
		$r{h} = IPC::Run::start(
			[ 'psql', '-XAtq', '-v', 'VERBOSITY=verbose', '-d', $node->connstr('postgres'), '-c', $sql[$i] ],
			'>', \$r{out}, '2>', \$r{err});
		push @runs, \%r;
	}
	return @runs;
}

# --- four sessions at once stay within 20 per sliding second ---------------
my $t0 = time;
my @runs = start_sessions(map {
	"SET zim_pin.max_convs_per_request = 1; "
	  . "SELECT count(*) FROM zim_conv_pinned('s$_', ARRAY(SELECT 'g' || i FROM generate_series(1, 25) i), 2, true)"
} 1 .. 4);
$_->{h}->finish for @runs;
my $took = time - $t0;
is(join(',', map { $_->{out} } @runs), "0\n,0\n,0\n,0\n", 'four concurrent sessions pinned 25 groups each');
is(state_field(q{(s->'MaxInAnyWindow'->>'ConvPinned')::int <= 20}), 't',
	'the double never saw more than 20 ConvPinned requests in any sliding second');
is(state_field(q{coalesce(s->'RateLimited'->>'ConvPinned', '0')}), '0',
	'... and never had to refuse one (no 660300005)');
cmp_ok($took, '>', 4.0, sprintf('100 requests took %.1f s: the limit was shared, not per session', $took));
cmp_ok($took, '<', 7.5, '... and the sessions were served at the full rate');

# --- the statistics match what the double received -------------------------
my $double_n = state_field(q{(SELECT count(*) FROM jsonb_array_elements(s->'Requests') r WHERE r->>'Action' = 'ConvPinned')});
my $stats = $node->safe_psql('postgres', q{
	SELECT requests, succeeded, failed_connection + failed_service, convs_changed, convs_failed
	FROM zim_pin_stats WHERE action = 'ConvPinned'});
is($stats, "$double_n|$double_n|0|100|0",
	"zim_pin_stats counts the $double_n requests the double received, all succeeded, 100 conversations changed");
my $throttled = $node->safe_psql('postgres',
	q{SELECT throttled > 0 AND throttled_ms > 0 FROM zim_pin_stats WHERE action = 'ConvPinned'});
is($throttled, 't', '... and the limiter waits it counted');

# --- a session waiting for the shared limiter is cancelled promptly --------
$node->safe_psql('postgres', q{SELECT double('Reset'); SELECT register('s1', 's2')});
# two sessions keep 32 requests reserved ahead: more than a second's worth
# (they unpin, so that the 100-pin limit does not come into it)
my @flood = start_sessions(map {
	"SET zim_pin.max_convs_per_request = 1; "
	  . "SELECT count(*) FROM zim_conv_pinned('s1', ARRAY(SELECT 'f$_' || i FROM generate_series(1, 60) i), 2, false)"
} 1 .. 2);
Time::HiRes::sleep(0.3);
$t0 = time;
my ($ret, $out, $err) = $node->psql('postgres', q{
	SET statement_timeout = '300ms';
	SELECT * FROM zim_conv_pinned('s2', ARRAY['w1'], 2, true);
}, extra_params => [ '-v', 'VERBOSITY=verbose' ]);
$took = time - $t0;
like($err, qr/57014: canceling statement due to statement timeout/,
	'a session queued behind others in the shared limiter: statement_timeout gives 57014');
cmp_ok($took, '<', 1.3, sprintf('... promptly (%.2f s for 300 ms)', $took));
$_->{h}->finish for @flood;
is(join('', map { $_->{out} } @flood), "0\n0\n", 'the flooding sessions finished their 120 requests');

# --- a reload changes the rate ----------------------------------------------
$node->safe_psql('postgres', q{SELECT double('Reset'); SELECT register('s3')});
$node->append_conf('postgresql.conf', "zim_pin.requests_per_second = 5\n");
$node->reload;
$node->poll_query_until('postgres', q{SELECT current_setting('zim_pin.requests_per_second') = '5'})
  or die 'reload did not take effect';
$t0 = time;
is($node->safe_psql('postgres', q{
	SET zim_pin.max_convs_per_request = 1;
	SELECT count(*) FROM zim_conv_pinned('s3', ARRAY(SELECT 'r' || i FROM generate_series(1, 12) i), 2, true)}),
	'0', 'after a reload to 5 per second, 12 requests succeed');
$took = time - $t0;
cmp_ok($took, '>', 2.0, sprintf('... paced at 5 per second (%.1f s)', $took));
is(state_field(q{(s->'MaxInAnyWindow'->>'ConvPinned')::int <= 5}), 't',
	'... never more than 5 in any sliding second');
$node->append_conf('postgresql.conf', "zim_pin.requests_per_second = 20\n");
$node->reload;
$node->poll_query_until('postgres', q{SELECT current_setting('zim_pin.requests_per_second') = '20'})
  or die 'reload did not take effect';

# --- a rate-limit answer slows every session down ---------------------------
$node->safe_psql('postgres', q{
	SELECT double('Reset');
	SELECT register('s1', 's2');
	SELECT double('Fault', '{"Fault": "code", "Code": 660300005, "Count": 1, "Action": "ConvPinned", "Match": "busy1"}');
});
my @a = start_sessions(q{SELECT count(*) FROM zim_conv_pinned('s1', ARRAY['busy1'], 2, true)});
Time::HiRes::sleep(0.2);
$t0 = time;
is($node->safe_psql('postgres', q{SELECT count(*) FROM zim_conv_pinned('s2', ARRAY['calm1'], 2, true)}),
	'0', 'another session pins while the first backs off');
$took = time - $t0;
cmp_ok($took, '>', 0.5, sprintf('... but only after the shared pause (%.2f s)', $took));
$a[0]{h}->finish;
is($a[0]{out}, "0\n", 'the session that saw 660300005 succeeded on its retry');

# --- the chunks of one call go out concurrently -----------------------------
$node->safe_psql('postgres', q{
	SELECT double('Reset');
	SELECT register('s4');
	SELECT double('Config', '{"LatencyMs": 150}');
});
$t0 = time;
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM zim_conv_pinned('s4', ARRAY(SELECT 'c' || i FROM generate_series(1, 100) i), 2, true)}),
	'0', 'a call of 100 conversations at 150 ms latency succeeds');
$took = time - $t0;
cmp_ok($took, '<', 0.6, sprintf('... in %.0f ms: its 5 requests went out together, not one after another', $took * 1000));
is(state_field(q{(SELECT count(*) FROM jsonb_array_elements(s->'Requests') r WHERE r->>'Action' = 'ConvPinned')}),
	'5', '... as 5 requests');
$node->safe_psql('postgres', q{SELECT double('Config', '{"LatencyMs": 0}')});

$node->stop;
done_testing();
