# Hardening, part 2, item 5 (in part): ids that cannot be sent in UTF-8.
#
# An id the database's encoding cannot give in UTF-8 (any non-ASCII byte in
# SQL_ASCII, an unmapped byte in WIN1252) is refused at input, by the
# synchronous call and by enqueue alike, with PostgreSQL's own SQLSTATE,
# before anything is sent or stored; so it can no longer become a job that
# fails every claim and holds every later user's job pending.  Ids are
# measured in UTF-8, as they go on the wire, by zim_pin and by the double
# (item 9).
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Utils;
use Test::More;
use ZimTest;

my $node = zim_node('poison');
$node->safe_psql('postgres', q{SELECT double('Reset'); SELECT register('q_a', 'q_b')});

for my $case (['sqlascii', 'SQL_ASCII', "caf\\xe9", '22021'],
	['win1252', 'WIN1252', "g\\x81", '22P05'])
{
	my ($db, $enc, $bytes, $state) = @$case;
	$node->safe_psql('postgres',
		qq{CREATE DATABASE $db ENCODING '$enc' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0});
	$node->safe_psql($db, q{CREATE EXTENSION zim_pin});
	for my $call ("SELECT * FROM zim_conv_pinned('q_a', ARRAY[E'$bytes'], 2, true)",
		"SELECT zim_conv_pinned_enqueue('q_a', ARRAY[E'$bytes'], 2, true)")
	{
		my ($ret, $out, $err) = $node->psql($db, $call, extra_params => ['-v', 'VERBOSITY=verbose']);
		like($err, qr/ERROR:  $state:/, "$enc: " . ($call =~ /enqueue/ ? 'enqueue' : 'the call') . " refuses an id with a byte UTF-8 cannot take ($state)");
	}
	is($node->safe_psql($db, q{SELECT count(*) FROM zim_pin_job}), '0', "$enc: nothing was queued");
	# the queue goes on: a later user's job is sent
	$node->safe_psql($db, q{SELECT zim_conv_pinned_enqueue('q_b', ARRAY['g1'], 2, true)});
	is($node->safe_psql($db, q{SELECT zim_pin_run_jobs()}), '1', "$enc: the next job is sent");
}

# measured in UTF-8: 17 "é" are 17 bytes in WIN1252 but 34 on the wire
my ($ret, $out, $err) = $node->psql('win1252',
	q{SELECT zim_conv_pinned_enqueue('q_a', ARRAY[repeat(convert_from('\xe9'::bytea, 'WIN1252'), 17)], 2, true)},
	extra_params => ['-v', 'VERBOSITY=verbose']);
like($err, qr/ERROR:  22023: conversation id must not be longer than 32 bytes in UTF-8/,
	'WIN1252: an id of 17 bytes that is 34 in UTF-8 is refused');
is($node->safe_psql('win1252', q{SELECT zim_conv_pinned_enqueue('q_a', ARRAY[repeat(convert_from('\xe9'::bytea, 'WIN1252'), 16)], 2, true) > 0}),
	't', '... and one of 32 bytes in UTF-8 is queued');

# the double counts the same way (ZIM documents 32 characters; the contract
# holds ids to 32 bytes): it takes 32 bytes of UTF-8 and refuses 34, as
# the vendor refuses a bad item (660000002)
is($node->safe_psql('win1252', q{SELECT count(*) FROM zim_conv_pinned('q_a', ARRAY[repeat(convert_from('\xe9'::bytea, 'WIN1252'), 16)], 2, true)}),
	'0', 'the call sends an id of 32 bytes in UTF-8, and the double takes it');
is($node->safe_psql('win1252', q{SELECT zim_api('ConvPinned', jsonb_build_object('FromUserId', 'q_a', 'PinnedType', 1,
		'ConvList', jsonb_build_array(jsonb_build_object('ConvId', repeat(convert_from('\xe9'::bytea, 'WIN1252'), 17), 'ConvType', 2))))
		->'ErrorList'->0->>'SubCode'}),
	'660000002', 'the double refuses an id of 17 characters that is 34 bytes in UTF-8');

$node->stop;
done_testing();
