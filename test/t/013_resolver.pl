# A name server that never answers (issue 7, item 5).  libcurl resolves
# names in a thread, and removing a transfer that is still resolving used to
# wait for getaddrinfo (30 s or more).  With CURLOPT_QUICK_EXIT, a cancel,
# statement_timeout, zim_pin.connect_timeout_ms and pg_terminate_backend act
# within their usual time whatever the resolver does.  test/hang_resolver.c,
# preloaded into the cluster, makes every name ending in ".hang.test" take
# 30 s to fail.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use ZimTest;

my $dir = PostgreSQL::Test::Utils::tempdir;
my $so = "$dir/hang_resolver.so";
system('cc', '-shared', '-fPIC', '-o', $so, "$FindBin::RealBin/../hang_resolver.c", '-ldl') == 0
	or die "cannot build the resolver fixture";

my $node = zim_node('resolver');
$node->stop;
{
	local $ENV{LD_PRELOAD} = $so;
	$node->start;
}
$node->safe_psql('postgres', q{SELECT double('Reset'); SELECT register('r1')});
my $hang = q{SET zim_pin.api_url = 'https://zim.hang.test:1/'; SET zim_pin.max_retries = 0;};
my $call = q{SELECT count(*) FROM zim_conv_pinned('r1', ARRAY['g1'], 2, true)};

# statement_timeout while resolving
my $t0 = time;
my ($ret, $out, $err) = $node->psql('postgres', "$hang SET statement_timeout = '300ms'; $call",
	extra_params => ['-v', 'VERBOSITY=verbose']);
my $took = time - $t0;
like($err, qr/57014: canceling statement due to statement timeout/, 'statement_timeout cancels a call that is resolving');
cmp_ok($took, '<', 3, sprintf('... at once (%.2f s), not after the resolver\'s 30 s', $took));

# zim_pin.connect_timeout_ms bounds the resolution too
$t0 = time;
($ret, $out, $err) = $node->psql('postgres', "$hang SET zim_pin.connect_timeout_ms = 400; $call",
	extra_params => ['-v', 'VERBOSITY=verbose']);
$took = time - $t0;
like($err, qr/08001: /, 'zim_pin.connect_timeout_ms ends a resolution that hangs, with 08001');
cmp_ok($took, '<', 3, sprintf('... in time (%.2f s)', $took));

# a cancel from another session, and then the same session works
my $s = $node->background_psql('postgres', on_error_stop => 0);
$s->query_safe($hang);
my $pid = $s->query_safe('SELECT pg_backend_pid()');
$pid =~ s/\s+//g;
$s->query_until(qr/started/, "\\echo started\n$call;\n");
usleep(300_000);
$t0 = time;
$node->safe_psql('postgres', "SELECT pg_cancel_backend($pid)");
my $r = $s->query(q{SELECT 'after'});
$took = time - $t0;
like($s->{stderr}, qr/canceling statement due to user request/, 'a cancel ends a call that is resolving');
cmp_ok($took, '<', 3, sprintf('... at once (%.2f s)', $took));
$s->{stderr} = '';				# older BackgroundPsql keeps it
$s->query_safe('RESET zim_pin.api_url');
like($s->query_safe($call), qr/^0\s*$/, '... and the session\'s next call works');

# terminate
$s->query_safe($hang);
$s->query_until(qr/started/, "\\echo started\n$call;\n");
usleep(300_000);
$t0 = time;
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
ok($node->poll_query_until('postgres', "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $pid"),
	'pg_terminate_backend ends a backend that is resolving');
$took = time - $t0;
cmp_ok($took, '<', 3, sprintf('... at once (%.2f s)', $took));
eval { $s->quit };

ok(!$node->log_contains('terminated by signal'), 'no backend crashed');
is($node->safe_psql('postgres', $call), '0', 'the server keeps working');
$node->stop;
done_testing();
