# Without shared_preload_libraries: the library loads on first use, and a
# non-superuser who SET zim_pin.* before that cannot redirect requests.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Utils;
use Test::More;
use ZimTest;

my $node = zim_node('lazy', preload => 0);
$node->safe_psql('postgres', q{
	SELECT double('Reset');
	SELECT register('l_a', 'l_b', 'l_c');
	CREATE ROLE app LOGIN;
	GRANT EXECUTE ON FUNCTION zim_conv_pinned(text, text[], integer, boolean) TO app;
});

# a fresh session of an ordinary role, the library not loaded yet
my ($ret, $out, $err) = $node->psql('postgres', q{
	SET zim_pin.api_url = 'https://attacker.invalid/';
	SET zim_pin.ca_file = '/tmp/attacker-ca.pem';
	SELECT count(*) FROM zim_conv_pinned('l_a', ARRAY['l_b'], 0, true);
	SHOW zim_pin.api_url;
}, extra_params => ['-U', 'app']);
like($err, qr/permission denied to set parameter "zim_pin.api_url"/,
	'a placeholder set by a non-superuser is refused when the library loads');
like($out, qr/^0\nhttps:\/\/127\.0\.0\.1:\d+\/$/m,
	'... and the request went to the configured server, which pinned it');
is($node->safe_psql('postgres', q{
	SELECT string_agg(p->>'ConvId', ',') FROM jsonb_array_elements(double('State', '{"UserId": "l_a"}')->'Pins') p}),
	'l_b', 'the double recorded the pin');

# after loading, the prefix is reserved
($ret, $out, $err) = $node->psql('postgres', q{
	SELECT count(*) FROM zim_conv_pinned('l_a', ARRAY['l_c'], 0, true);
	SET zim_pin.bogus = 1;
}, extra_params => ['-U', 'app']);
like($err, qr/"zim_pin" is a reserved prefix/, 'once loaded, zim_pin.* placeholders are refused');

$node->stop;

# single-user mode has no postmaster to watch: waits must still work there
my ($in, $sout, $serr) = (q{SELECT count(*) FROM zim_conv_pinned('l_a', ARRAY['l_b', 'nobody'], 0, true);
}, '', '');
IPC::Run::run(['postgres', '--single', '-D', $node->data_dir, 'postgres'],
	'<', \$in, '>', \$sout, '2>&1');
like($sout, qr/count = "1"/, 'a call in single-user mode works (one failure row)');
unlike($sout, qr/ERROR/, '... without any error');

done_testing();
