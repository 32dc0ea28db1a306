# The shared limiter behind a jittery network (issue 15, item 10).  The
# double delays each request on its way in by a random 0..N ms before it
# counts it, so two requests a window apart on our side can arrive less
# than a second apart.  What users see must not change: every call
# succeeds and ZIM refuses at most one request.  With 60 ms of jitter the
# margin the limiter takes for the jitter it sees is enough; with 300 ms
# ZIM's first 660300005s tell the limiter to widen its margin, and the
# retries cover them.  Refusals the double is told to give show the rules
# of the widening.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use ZimTest;

my $sessions = 8;

# DEBUG1 for the limiter's "margin widened" line
my $node = zim_node('jitter', conf => "log_min_messages = debug1\n");

sub state_field
{
	my ($expr) = @_;
	return $node->safe_psql('postgres', "SELECT $expr FROM double('State') s");
}

# $sessions sessions of $calls one-request calls at once, all of the one
# Action ConvPinned, behind $jitter ms of jitter; checks what users see and
# returns the answers of 660300005 and the seconds the calls took
sub run_sessions
{
	my ($jitter, $calls, $prefix) = @_;
	my $n = $sessions * $calls;

	$node->safe_psql('postgres', q{
		SELECT double('Reset');
		SELECT register('j1', 'j2', 'j3', 'j4', 'j5', 'j6', 'j7', 'j8');
		SELECT zim_pin_stats_reset();
	});
	Time::HiRes::sleep(1.1);	# the registration leaves the window
	$node->safe_psql('postgres', qq{SELECT double('Config', '{"JitterMs": $jitter}')});
	is(state_field(q{s->'Config'->>'JitterMs'}), $jitter,
		"the double delays requests by up to $jitter ms on their way in");

	# each session prints how many calls it made and how many rows failed
	my $t0 = time;
	my @runs;
	for my $s (1 .. $sessions)
	{
		my %r = (out => '', err => '');
		$r{h} = IPC::Run::start(
			[
				'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-v', 'VERBOSITY=verbose',
				'-d', $node->connstr('postgres'),
				'-c', "SELECT count(*), count(f.conv_id) FROM generate_series(1, $calls) i "
				  . "LEFT JOIN LATERAL zim_conv_pinned('j$s', ARRAY['$prefix' || i], 2, true) f ON true"
			],
			'>', \$r{out}, '2>', \$r{err});
		push @runs, \%r;
	}
	$_->{h}->finish for @runs;
	my $took = time - $t0;
	$node->safe_psql('postgres', q{SELECT double('Config', '{"JitterMs": 0}')});

	is(join('', map { $_->{out} } @runs), "$calls|0\n" x $sessions,
		"$sessions sessions x $calls calls behind $jitter ms of jitter: every call succeeded");
	is(join('', map { $_->{err} } @runs), '', '... and none raised');

	# the refused requests are zim_pin_stats' failed and retried attempts
	my $refused = state_field(q{coalesce(s->'RateLimited'->>'ConvPinned', '0')});
	is($node->safe_psql('postgres', q{
		SELECT requests || '|' || succeeded || '|' || failed_service || '|' || retries
		FROM zim_pin_stats WHERE action = 'ConvPinned'}),
		($n + $refused) . "|$n|$refused|$refused",
		"zim_pin_stats: $n requests succeeded, and the $refused answers of 660300005 were retried");

	# not a timing test, but a margin that ran away would halve the rate
	cmp_ok($took, '<', 1.5 * $n / 20,
		sprintf('%d requests took %.1f s, near the %.0f s the vendor allows', $n, $took, $n / 20));
	return ($refused, $took);
}

# --- 60 ms: the margin for the jitter the limiter sees is enough ------------
my ($refused) = run_sessions(60, 30, 'g');
my $peak = state_field(q{s->'MaxInAnyWindow'->>'ConvPinned'});
ok($peak <= 20 || $refused <= 1,
	"the double saw at most 20 ConvPinned requests in any sliding second ($peak), or refused at most one ($refused)");

# --- 300 ms: more jitter than the limiter sees -------------------------------
# the calls still succeed: ZIM's first refusals widen the margin to the
# jitter's size, and the retries cover what it refused before
run_sessions(300, 15, 'h');

# --- the refusals' rules, with refusals the double is told to give --------
# two requests of one call leave together and are both refused: only the
# first refusal widens the margin (the second request left before it), and
# a later refusal of a request sent under the wider margin doubles it
Time::HiRes::sleep(3);	# nothing of the last run is in any window now
$node->safe_psql('postgres', q{SELECT double('Reset'); SELECT register('j1')});
my $log_offset = -s $node->logfile;
$node->safe_psql('postgres', q{SELECT double('Fault', '{"Fault": "code", "Code": 660300005, "Count": 2, "Action": "ConvPinned"}')});
is($node->safe_psql('postgres', q{
	SET zim_pin.max_convs_per_request = 1;
	SELECT count(*) FROM zim_conv_pinned('j1', ARRAY['w1', 'w2'], 2, true)}),
	'0', 'two requests refused at once succeed on their retries');
my @margins = slurp_file($node->logfile, $log_offset) =~ /ConvPinned rate exceeded: margin widened to ([0-9.]+) ms/g;
is(scalar(@margins), 1, sprintf('... and widened the margin once (%s ms)', join(', ', @margins)));
cmp_ok($margins[0] // 0, '>=', 50, '... to 50 ms at least (25 ms, and 25 ms more than the jitter seen)');
$log_offset = -s $node->logfile;
$node->safe_psql('postgres', q{SELECT double('Fault', '{"Fault": "code", "Code": 660300005, "Count": 1, "Action": "ConvPinned"}')});
is($node->safe_psql('postgres', q{SELECT count(*) FROM zim_conv_pinned('j1', ARRAY['w3'], 2, true)}),
	'0', 'a request refused under the wider margin succeeds on its retry');
my @more = slurp_file($node->logfile, $log_offset) =~ /ConvPinned rate exceeded: margin widened to ([0-9.]+) ms/g;
ok(@more == 1 && $more[0] > $margins[0] + 20,
	sprintf('... and widened it again, to about twice (%s ms)', join(', ', @more)));
is(state_field(q{coalesce(s->'RateLimited'->>'ConvPinned', '0')}) . '|'
	  . state_field(q{(SELECT count(*) FROM jsonb_array_elements(s->'Requests') r WHERE (r->>'Code')::bigint = 660300005)}),
	'0|3', 'the double sent the three refusals it was told to, and refused nothing of its own');

$node->stop;
done_testing();
