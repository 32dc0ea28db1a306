# A backend's memory does not grow with failing calls (issue 7, item 14).
# One session makes 3,000 calls that fail in each way, then two windows of
# 6,000 more, and its private memory (RssAnon) must not grow by more than
# 48 kB (8 B a call) in the quieter window: a leak grows in both.  Shared memory is left out: the limiter's rings of send times are
# touched page by page as they turn, which is bounded (test/bench-memory
# prints both).
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use List::Util;
use PostgreSQL::Test::Utils;
use Test::More;
use ZimTest;

my $node = zim_node('memory', conf => "zim_pin.requests_per_second = 10000\nzim_pin.max_retries = 0\n");
$node->safe_psql('postgres', q{SELECT double('Reset'); SELECT double('Config', '{"RateLimit": 100000000}')});
is($node->safe_psql('postgres', q{SELECT register('mem1')}), '0', 'user registered');

my $closed = PostgreSQL::Test::Cluster::get_free_port();

sub rss_anon
{
	my ($pid) = @_;
	my ($kb) = slurp_file("/proc/$pid/status") =~ /^RssAnon:\s+(\d+) kB/m;
	return $kb;
}

sub growth
{
	my ($name, $setup, $call, $fault) = @_;
	$node->safe_psql('postgres', q{SELECT double('Fault', '{"Fault": "clear"}')});
	$node->safe_psql('postgres', qq{SELECT double('Fault', '$fault')}) if $fault;
	my $s = $node->background_psql('postgres');
	$s->query_safe($setup) if $setup;
	$s->query_safe(qq{CREATE FUNCTION pg_temp.calls(n int) RETURNS int LANGUAGE plpgsql AS \$\$
		DECLARE failed int := 0;
		BEGIN
			FOR i IN 1..n LOOP
				BEGIN
					$call;
				EXCEPTION WHEN OTHERS THEN
					failed := failed + 1;
				END;
			END LOOP;
			RETURN failed;
		END \$\$});
	my $pid = $s->query_safe('SELECT pg_backend_pid()');
	$pid =~ s/\s+//g;
	my $f1 = $s->query_safe('SELECT pg_temp.calls(3000)');
	my $r0 = rss_anon($pid);
	my $f2 = $s->query_safe('SELECT pg_temp.calls(6000)');
	my $r1 = rss_anon($pid);
	my $f3 = $s->query_safe('SELECT pg_temp.calls(6000)');
	my $r2 = rss_anon($pid);
	$s->quit;
	s/\s+//g for $f1, $f2, $f3;
	is($f1 + $f2 + $f3, 15000, "$name: all 15,000 calls failed");

	# A leak grows the same in every window; malloc's arenas may step once
	# (seen: 88 kB in one window on 18, then flat over 24,000 calls).  So the
	# quieter of two windows of 6,000 must stay within 48 kB.
	my $grew = List::Util::min($r1 - $r0, $r2 - $r1);
	cmp_ok($grew, '<=', 48,
		sprintf("... and the backend's private memory grew by %d kB over 6,000 calls (%.1f B a call; the two windows: %d and %d kB)",
			$grew, $grew * 1024 / 6000, $r1 - $r0, $r2 - $r1));
}

growth('connection refused', "SET zim_pin.api_url = 'https://127.0.0.1:$closed/'",
	q{PERFORM * FROM zim_conv_pinned('mem1', ARRAY['g'], 2, true)});
growth('an unregistered user', '',
	q{PERFORM * FROM zim_conv_pinned('nobody', ARRAY['g'], 2, true)});
growth('HTTP 500', '',
	q{PERFORM * FROM zim_conv_pinned('mem1', ARRAY['g'], 2, true)},
	'{"Fault": "http500", "Count": 20000}');
growth('an answer that is not JSON', '',
	q{PERFORM * FROM zim_conv_pinned('mem1', ARRAY['g'], 2, true)},
	'{"Fault": "nonjson", "Count": 20000}');
growth('a timeout', "SET zim_pin.timeout_ms = 1",
	q{PERFORM * FROM zim_conv_pinned('mem1', ARRAY['g'], 2, true)},
	'{"Fault": "slow", "Ms": 20, "Count": 20000}');

$node->stop;
done_testing();
