# ZimTest.pm: a preloaded PostgreSQL::Test::Cluster pointed at the ZIM
# double that test/run-tests started (ZIM_URL, ZIM_CERT_DIR, ...).
package ZimTest;

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use Exporter 'import';
our @EXPORT = qw(zim_node zim_secret);

# The test secret, read from a file: it never travels in the environment.
sub zim_secret
{
	open(my $fh, '<', $ENV{ZIM_SECRET_FILE}) or die "no secret file: $!";
	local $/;
	my $s = <$fh>;
	close $fh;
	return $s;
}

# zim_node(name, preload => 1, secret_file => 0, conf => "extra lines",
#          install_path => dir, extra => [initdb options], start => 1)
# The secret goes in zim_pin.server_secret, or with secret_file => 1 (the
# way the README recommends without preloading) in a file of mode 0600
# named by zim_pin.server_secret_file.  install_path runs another
# installation's server (033: the 16 cache); with start => 0 the node is
# configured but neither started nor given the extension (a pg_upgrade
# target must be empty).
sub zim_node
{
	my ($name, %opt) = @_;
	my $preload = exists $opt{preload} ? $opt{preload} : 1;
	my $node = PostgreSQL::Test::Cluster->new($name,
		$opt{install_path} ? (install_path => $opt{install_path}) : ());
	$node->init($opt{extra} ? (extra => $opt{extra}) : ());
	my $conf = '';
	$conf .= "shared_preload_libraries = 'zim_pin'\n" if $preload;
	$conf .= "zim_pin.app_id = '$ENV{ZIM_APP_ID}'\n";
	if ($opt{secret_file})
	{
		my $file = $node->data_dir . '/zim_secret';
		open(my $fh, '>', $file) or die "cannot write $file: $!";
		print $fh zim_secret() . "\n";
		close $fh;
		chmod 0600, $file;
		$conf .= "zim_pin.server_secret_file = '$file'\n";
	}
	else
	{
		$conf .= "zim_pin.server_secret = '" . zim_secret() . "'\n";
	}
	$conf .= "zim_pin.api_url = '$ENV{ZIM_URL}'\n";
	$conf .= "zim_pin.ca_file = '$ENV{ZIM_CERT_DIR}/ca.crt'\n";
	$conf .= $opt{conf} if $opt{conf};
	$node->append_conf('postgresql.conf', $conf);
	return $node if exists $opt{start} && !$opt{start};
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION zim_pin');
	$node->safe_psql('postgres', q{
		CREATE FUNCTION double(action text, body jsonb DEFAULT '{}')
		RETURNS jsonb LANGUAGE sql AS $$ SELECT zim_api('Test' || action, body) $$;
		CREATE FUNCTION register(VARIADIC ids text[]) RETURNS bigint LANGUAGE sql AS $$
		    SELECT (zim_api('UserRegister', jsonb_build_object('UserInfo',
		        (SELECT jsonb_agg(jsonb_build_object('UserId', id, 'UserName', id, 'UserAvatar', ''))
		         FROM unnest(ids) id)))->>'Code')::bigint $$;
	});
	return $node;
}

1;
