# Hardening, part 2, item 9: libcurl may watch more sockets than there are
# transfers.  While happy eyeballs races IPv4 against IPv6, each transfer
# has two; newer libcurl versions have more.  The list of watched sockets
# once had a fixed size (36) and overflowing it was an elog(ERROR), an
# XX000.  It now grows as libcurl needs.  Here 16 transfers at once each
# connect to "localhost", which libcurl resolves to 127.0.0.1 and ::1.
# 127.0.0.1 never answers (test/eyeballs.py: a listener whose backlog is
# full) and ::1 relays to the double.  So after the happy-eyeballs delay,
# each transfer has both sockets open.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use ZimTest;

my $dir = PostgreSQL::Test::Utils::tempdir;
my ($double_port) = $ENV{ZIM_URL} =~ m{:(\d+)/?$};
my $fixture = IPC::Run::start(['python3', "$FindBin::RealBin/../eyeballs.py", $double_port, $dir],
	'>', "$dir/stdout", '2>', "$dir/stderr");
for (1 .. 100)
{
	last if -s "$dir/port";
	usleep(100_000);
}
my $port = PostgreSQL::Test::Utils::slurp_file("$dir/port");
chomp $port;
ok($port =~ /^\d+$/, 'the fixture listens on [::1] and on a full 127.0.0.1, both on one port')
	or diag PostgreSQL::Test::Utils::slurp_file("$dir/stderr");

my $node = zim_node('eyeballs');
$node->safe_psql('postgres', q{SELECT double('Reset'); SELECT register('he_a')});
my $call = qq{SET zim_pin.api_url = 'https://localhost:$port/'; SET zim_pin.max_convs_per_request = 1;
	SELECT count(*) FROM zim_conv_pinned('he_a', ARRAY(SELECT 'g' || i FROM generate_series(1, 16) i), 2, true)};

my $t0 = time;
my ($ret, $out, $err) = $node->psql('postgres', $call, extra_params => ['-v', 'VERBOSITY=verbose']);
my $took = time - $t0;
is($out, '0', '16 requests at once, each racing IPv4 against IPv6, all succeed') or diag $err;
unlike($err, qr/XX000|ERROR/, '... with no error');
cmp_ok($took, '>=', 0.2, sprintf('... after the happy-eyeballs delay (%.2f s)', $took));
is(PostgreSQL::Test::Utils::slurp_file("$dir/accepted"), "16\n", '... on 16 connections, all over ::1');
is($node->safe_psql('postgres', q{SELECT count(*) FROM jsonb_array_elements(double('State')->'Requests') r
	WHERE r->>'Action' = 'ConvPinned' AND r->>'User' = 'he_a'}), '16', '... which the double received');
is($node->safe_psql('postgres', q{SELECT count(*) FROM jsonb_array_elements(double('State', '{"UserId": "he_a"}')->'Pins')}),
	'16', '... and applied');

ok(!$node->log_contains('terminated by signal'), 'no backend crashed');
$node->stop;
$fixture->kill_kill;
done_testing();
