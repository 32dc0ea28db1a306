# Without shared_preload_libraries: the library loads on first use, and a
# non-superuser who SET zim_pin.* before that cannot redirect requests.  The
# secret comes from zim_pin.server_secret_file, as the README recommends for
# this mode: no ordinary role can read it.  A secret in zim_pin.server_secret
# is refused in this mode, and so are both at once and a file that others
# may read.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Utils;
use Test::More;
use Digest::MD5;
use ZimTest;

my $node = zim_node('lazy', preload => 0, secret_file => 1);
my $secret = zim_secret();
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

# --- no ordinary role can read the secret ---------------------------------
# before and after the library loads in its session.  (The statements
# never contain the secret, since the server logs them: every setting's
# value is compared by its MD5.)
my $file = $node->data_dir . '/zim_secret';
my $all_values = q{SELECT string_agg(md5(coalesce(setting, '')) || ',' || md5(coalesce(reset_val, '')), ',') FROM pg_settings;};
($ret, $out, $err) = $node->psql('postgres', qq{
	$all_values
	SELECT coalesce(current_setting('zim_pin.server_secret', true), '<unset>');
	SELECT count(*) FROM zim_conv_pinned('l_a', ARRAY['l_b'], 0, true);
	$all_values
	SELECT pg_read_file('$file');
}, extra_params => ['-U', 'app']);
my @lines = split /\n/, $out;
my $md5 = Digest::MD5::md5_hex($secret);
is(scalar(@lines) . " $lines[1] $lines[2]", "4 <unset> 0", 'an ordinary role sees no zim_pin.server_secret, and pins');
ok($lines[0] =~ /^[0-9a-f,]{1000,}$/ && $lines[0] !~ /$md5/ && $lines[3] !~ /$md5/,
	'... and finds the secret in no setting, before and after the library loads');
like($err, qr/permission denied for function pg_read_file/, '... and cannot read the secret file');
unlike($out . $err, qr/\Q$secret\E/, '... and nothing it was shown contains the secret');

# --- zim_pin.server_secret is not used without preloading ------------------
sub call_error
{
	my ($conf) = @_;
	$node->append_conf('postgresql.conf', $conf);
	$node->reload;
	my ($r, $o, $e) = $node->psql('postgres',
		q{SELECT count(*) FROM zim_conv_pinned('l_a', ARRAY['l_b'], 0, true)},
		extra_params => ['-v', 'VERBOSITY=verbose']);
	return $e;
}
# (not the real secret: a placeholder's value is logged on reload, the very
# reason it is refused)
$err = call_error("zim_pin.server_secret_file = ''\nzim_pin.server_secret = 'a-placeholder-value-0000'\n");
like($err, qr/ERROR:  55000: zim_pin.server_secret cannot be used without preloading/,
	'without preloading, a secret in zim_pin.server_secret is refused with 55000');
like($err, qr/HINT:  .*shared_preload_libraries.*zim_pin.server_secret_file/,
	'... and the hint names shared_preload_libraries and zim_pin.server_secret_file');

$err = call_error("zim_pin.server_secret_file = '$file'\n");
like($err, qr/ERROR:  55000: zim_pin.server_secret and zim_pin.server_secret_file are both set/,
	'both ways at once are refused');

chmod 0640, $file;
$err = call_error("zim_pin.server_secret = ''\n");
like($err, qr/ERROR:  55000: the file named by zim_pin.server_secret_file has group or world access/,
	'a secret file that the group may read is refused');
unlike($err, qr/\Q$secret\E/, '... without its contents');
unlike($err, qr/\Q$file\E/, '... and without its path, which only superusers may see');
ok($node->log_contains(qr/DETAIL:  The file is "\Q$file\E"/), '... which the server log names');
chmod 0600, $file;

($ret, $out, $err) = $node->psql('postgres', q{SELECT count(*) FROM zim_conv_pinned('l_a', ARRAY['l_c'], 0, false)});
is($out, '0', 'with the file back to 0600, calls work again after no reload (it is read at each call)');

$node->stop;

# single-user mode has no postmaster to watch: waits must still work there
my ($in, $sout, $serr) = (q{SELECT count(*) FROM zim_conv_pinned('l_a', ARRAY['l_b', 'nobody'], 0, true);
}, '', '');
IPC::Run::run(['postgres', '--single', '-D', $node->data_dir, 'postgres'],
	'<', \$in, '>', \$sout, '2>&1');
like($sout, qr/count = "1"/, 'a call in single-user mode works (one failure row)');
unlike($sout, qr/ERROR/, '... without any error');

done_testing();
