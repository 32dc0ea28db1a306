# A step of the wall clock while the limiter is busy (issue 15, item 9).
# The limiter's times are of CLOCK_MONOTONIC, so a step forward does not
# let a second burst out within the same second, and a step back does not
# stall the next request for the size of the step.  test/step_clock.c,
# preloaded into the cluster, steps the wall clock that PostgreSQL and
# libc see (gettimeofday, time, CLOCK_REALTIME) and leaves CLOCK_MONOTONIC
# alone; the double runs on the true clock.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use ZimTest;

my $dir = PostgreSQL::Test::Utils::tempdir;
my $so = "$dir/step_clock.so";
system('cc', '-shared', '-fPIC', '-o', $so, "$FindBin::RealBin/../step_clock.c", '-ldl') == 0
	or die "cannot build the clock fixture";
my $step_file = "$dir/clock_step";

# the step in seconds, written in place (every process maps the file)
sub step_clock
{
	my ($seconds) = @_;
	my $mode = -e $step_file ? '+<' : '>';
	open(my $fh, $mode, $step_file) or die "cannot write $step_file: $!";
	print $fh sprintf('%-31d', $seconds) . "\n";
	close $fh;
}
step_clock(0);

my $node = zim_node('clock');
$node->stop;
{
	local $ENV{LD_PRELOAD} = $so;
	local $ENV{ZIM_CLOCK_STEP_FILE} = $step_file;
	$node->start;
}

# how far the server's wall clock is off the true one, in seconds
sub server_offset
{
	my $t = time;
	my $server = $node->safe_psql('postgres', q{SELECT extract(epoch FROM clock_timestamp())});
	return $server - $t;
}

sub state_field
{
	my ($expr) = @_;
	return $node->safe_psql('postgres', "SELECT $expr FROM double('State') s");
}

# one call of n one-conversation requests, sent at once; returns the seconds
sub burst
{
	my ($prefix, $n) = @_;
	my $t0 = time;
	my $failed = $node->safe_psql('postgres', qq{
		SET zim_pin.max_convs_per_request = 1;
		SELECT count(*) FROM zim_conv_pinned('k1', ARRAY(SELECT '$prefix' || i FROM generate_series(1, $n) i), 2, true)});
	is($failed, '0', sprintf("%d request%s of '%s' succeeded", $n, $n == 1 ? '' : 's', $prefix));
	return time - $t0;
}

cmp_ok(abs(server_offset()), '<', 2, 'the server starts on the true wall clock');
$node->safe_psql('postgres', q{SELECT double('Reset'); SELECT register('k1')});
Time::HiRes::sleep(1.1);	# the registration leaves the window

# --- a step forward ----------------------------------------------------------
# a second's worth of requests, then the clock jumps 30 s ahead: the next
# second's worth still waits for the window, as the double counts it
burst('a', 20);
step_clock(30);
my $off = server_offset();
ok($off > 28 && $off < 32, sprintf('the server\'s wall clock stepped forward (%.1f s)', $off));
my $took = burst('b', 20);
cmp_ok($took, '>', 0.5, sprintf('after the step forward the next 20 waited for the window (%.2f s)', $took));
is(state_field(q{(s->'MaxInAnyWindow'->>'ConvPinned')::int <= 20}), 't',
	'... so the double never saw more than 20 in any sliding second');
is(state_field(q{coalesce(s->'RateLimited'->>'ConvPinned', '0')}), '0', '... and refused none');

# --- a step back -------------------------------------------------------------
# right after a second's worth of requests the clock goes back 30 s: the
# next request waits for the window, not for the 30 s to come again
burst('c', 20);
step_clock(0);
cmp_ok(abs(server_offset()), '<', 2, 'the server\'s wall clock stepped back');
$took = burst('d', 1);
cmp_ok($took, '<', 5, sprintf('after the step back the next request went within the window (%.2f s), not 30 s later', $took));
is(state_field(q{(s->'MaxInAnyWindow'->>'ConvPinned')::int <= 20}), 't',
	'through both steps the double never saw more than 20 in any sliding second');
is(state_field(q{coalesce(s->'RateLimited'->>'ConvPinned', '0')}), '0', '... and refused none');

$node->stop;
done_testing();
