# Every wait is interruptible: statement_timeout and pg_cancel_backend end a
# hung request, a rate-limit wait and a backoff promptly with 57014, and the
# backend stays usable without leaking file descriptors.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use ZimTest;

my $node = zim_node('cancel');
$node->safe_psql('postgres', q{SELECT double('Reset'); SELECT register('c_a', 'c_b')});

# --- statement_timeout during a hung request -------------------------------
my ($out, $err);
my $t0 = time;
$node->psql('postgres', q{
	SELECT double('Fault', '{"Fault": "hang", "Count": 1, "Action": "ConvPinned"}');
	SET statement_timeout = '500ms';
	SELECT * FROM zim_conv_pinned('c_a', ARRAY['c_b'], 0, true);
}, stdout => \$out, stderr => \$err, on_error_stop => 0,
   extra_params => ['-v', 'VERBOSITY=verbose']);
my $elapsed = time - $t0;
like($err, qr/ERROR:  57014: canceling statement due to statement timeout/,
	'statement_timeout during a hung request: 57014 with the server\'s message');
cmp_ok($elapsed, '<', 1.5, sprintf('... and the call ended promptly (%.2f s for a 500 ms timeout)', $elapsed));

# --- pg_cancel_backend, in one session that goes on afterwards -------------
my $bg = $node->background_psql('postgres', on_error_stop => 0);
my $pid = $bg->query_safe('SELECT pg_backend_pid()');
chomp $pid;
# one call first, so that libcurl's handles and the kept-alive connection exist
$bg->query_safe(q{SELECT * FROM zim_conv_pinned('c_a', ARRAY['c_b'], 0, true)});
my %fds_before = fd_count($pid);

# a backend's sockets, and its epoll sets, pipes and other anonymous inodes
# (not the relation files PostgreSQL itself caches)
sub fd_count
{
	my $p = shift;
	my %n = (socket => 0, other => 0);
	opendir(my $d, "/proc/$p/fd") or return (socket => -1, other => -1);
	for (readdir($d))
	{
		my $l = readlink("/proc/$p/fd/$_") // '';
		$n{socket}++ if $l =~ /^socket:/;
		$n{other}++ if $l =~ /^(anon_inode|pipe):/;
	}
	closedir $d;
	return %n;
}

sub cancel_during
{
	my ($what, $setup, $sql, $expect_before) = @_;
	$node->safe_psql('postgres', $setup) if $setup;
	# start the call, cancel it 400 ms later from another session
	$bg->{stdin} .= "$sql\n";
	my $start = time;
	$bg->{run}->pump_nb;
	Time::HiRes::sleep(0.4);
	my $c0 = time;
	$node->safe_psql('postgres', "SELECT pg_cancel_backend($pid)");
	$bg->{timeout}->start(30);
	$bg->{run}->pump until $bg->{stderr} =~ /ERROR/ || $bg->{timeout}->is_expired;
	my $took = time - $c0;
	like($bg->{stderr}, qr/57014: canceling statement due to user request/,
		"pg_cancel_backend during $what: 57014");
	cmp_ok($took, '<', 0.5, sprintf("... within %.0f ms of the cancel", $took * 1000));
	$bg->{stderr} = '';
	$bg->{stdout} = '';
}

$bg->query_safe('\set VERBOSITY verbose');
cancel_during('a hung request',
	q{SELECT double('Fault', '{"Fault": "hang", "Count": 1, "Action": "ConvPinned"}')},
	q{SELECT * FROM zim_conv_pinned('c_a', ARRAY['c_b'], 0, true);});

# a backoff: the double says "busy" for a long time, retries wait 1 s, 2 s...
cancel_during('a retry backoff',
	q{SELECT double('Fault', '{"Fault": "code", "Code": 660300005, "Count": 50, "Action": "ConvPinned"}')},
	q{SELECT * FROM zim_conv_pinned('c_a', ARRAY['c_b'], 0, true);});
$node->safe_psql('postgres', q{SELECT double('Fault', '{"Fault": "clear"}')});

# a rate-limit wait: at 20 requests a second, 200 one-conversation
# requests take 10 s; cancel after 400 ms
cancel_during('a rate-limit wait', undef,
	q{SET zim_pin.max_convs_per_request = 1; SELECT count(*) FROM zim_conv_pinned('c_a', ARRAY(SELECT 'g' || i FROM generate_series(1, 200) i), 2, true);});

# the session is still usable, its next call works, and nothing leaked
my $rows = $bg->query_safe(q{RESET zim_pin.max_convs_per_request; SELECT count(*) FROM zim_conv_pinned('c_a', ARRAY['c_b'], 0, false)});
chomp $rows;	# BackgroundPsql of 16.2 keeps the newline
is($rows, '0', 'after three cancels the same session pins and unpins');
for my $i (1 .. 5)
{
	$node->safe_psql('postgres', q{SELECT double('Fault', '{"Fault": "hang", "Count": 1, "Action": "ConvPinned"}')});
	$bg->query(q{SET statement_timeout = '200ms'; SELECT * FROM zim_conv_pinned('c_a', ARRAY['c_b'], 0, true); RESET statement_timeout;});
	like($bg->{stderr}, qr/57014/, "statement_timeout during hung request $i of 5");
	$bg->{stderr} = '';
}
$bg->query_safe('RESET statement_timeout');
$bg->query_safe(q{SELECT * FROM zim_conv_pinned('c_a', ARRAY['c_b'], 0, true)});
my %fds_after = fd_count($pid);
# An epoll set or pipe left behind is a leak, whatever its number.  Sockets
# may be more than before: the rate-limit call above opened up to 16
# connections at once (ZIM_MAX_TRANSFERS), and libcurl keeps up to that many
# alive for the next call (CURLMOPT_MAXCONNECTS); a leak would exceed it.
cmp_ok($fds_after{other}, '<=', $fds_before{other},
	"no epoll set or pipe leaked by eight interrupted calls ($fds_before{other} before, $fds_after{other} after)");
cmp_ok($fds_after{socket}, '<=', $fds_before{socket} + 16,
	"sockets stay within the connection cache after eight interrupted calls ($fds_before{socket} before, $fds_after{socket} after)");
# and more interrupted calls do not add any
for my $i (1 .. 5)
{
	$node->safe_psql('postgres', q{SELECT double('Fault', '{"Fault": "hang", "Count": 1, "Action": "ConvPinned"}')});
	$bg->query(q{SET statement_timeout = '200ms'; SELECT * FROM zim_conv_pinned('c_a', ARRAY['c_b'], 0, true); RESET statement_timeout;});
	$bg->{stderr} = '';
}
$bg->query_safe(q{SELECT * FROM zim_conv_pinned('c_a', ARRAY['c_b'], 0, true)});
my %fds_again = fd_count($pid);
cmp_ok($fds_again{socket} + $fds_again{other}, '<=', $fds_after{socket} + $fds_after{other},
	"five more interrupted calls add no descriptor ($fds_after{socket} + $fds_after{other} before, $fds_again{socket} + $fds_again{other} after)");
$bg->quit;

# the server is healthy: no backend crashed
ok(!$node->log_contains('terminated by signal'), 'no backend crashed');

$node->stop;
done_testing();
