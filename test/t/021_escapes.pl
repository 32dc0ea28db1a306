# Hardening, part 2, item 8: answers that write text beyond ASCII as \u
# escapes (Python's json.dumps does by default, and so does the double)
# read like answers that write it raw, in every database encoding.  A
# character the database cannot hold becomes "?" (SQL_ASCII keeps the
# UTF-8 bytes, raw or decoded), and so do \u0000 and a lone surrogate,
# which no text can hold.  Before, PostgreSQL's JSON parser converted the
# escapes itself and refused the whole answer (ZP005 on 16+, 22P05 or
# 0A000 on 15), so a call whose conversations changed failed, and the
# queue sent the applied request again until the job failed.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Utils;
use Test::More;
use ZimTest;

my $node = zim_node('escapes');
# psql and this file talk UTF-8 (this file has no "use utf8": its strings
# are UTF-8 bytes, as psql prints them)
sub sql
{
	my ($db, $sql) = @_;
	return $node->safe_psql($db, "SET client_encoding = 'UTF8'; $sql");
}

# text in another script, an emoji (a surrogate pair when escaped) and a
# Latin letter, in the double's answers for two Codes
my $text = "\xe7\xbd\xae\xe9\xa1\xb6\xe5\xa4\xb1\xe8\xb4\xa5 \xf0\x9f\x98\x80 \xc3\xa9";    # 置顶失败 😀 é
my %shown = (
	LATIN1 => '???? ? ' . "\xc3\xa9",    # what LATIN1 cannot hold is "?"
	SQL_ASCII => $text,                  # the UTF-8 bytes, as they came
	UTF8 => $text);
sql('postgres', qq{SELECT double('Reset'); SELECT register('e_a');
	SELECT double('Config', '{"Messages": {"660800001": "$text", "660700002": "$text"}}')});

my $convpinned_requests = q{SELECT count(*) FROM jsonb_array_elements(double('State')->'Requests') r
	WHERE r->>'Action' = 'ConvPinned'};

for my $enc ('LATIN1', 'SQL_ASCII', 'UTF8')
{
	my $db = lc "db_$enc";
	$node->safe_psql('postgres',
		qq{CREATE DATABASE $db ENCODING '$enc' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0});
	$node->safe_psql($db, q{CREATE EXTENSION zim_pin});
	my $want = $shown{$enc};

	for my $ascii ('true', 'false')
	{
		my $form = $ascii eq 'true' ? '\u escapes' : 'raw UTF-8';
		sql('postgres', qq{SELECT double('Config', '{"AsciiJson": $ascii}')});

		# the synchronous call: a row for the unregistered peer, whose
		# SubMessage is the text; the group was pinned
		my ($ret, $out, $err) = $node->psql($db,
			q{SET client_encoding = 'UTF8';
			  SELECT conv_id || ' ' || sub_code || ' ' || sub_message
			  FROM zim_conv_pinned('e_a', ARRAY['nobody', 'g1'], ARRAY[0, 2], true)});
		is($out, "nobody 660800001 $want", "$enc, $form: zim_conv_pinned returns the row, with the text as the database can hold it")
			or diag $err;

		# zim_api: the answer as jsonb
		($ret, $out, $err) = $node->psql($db,
			q{SET client_encoding = 'UTF8';
			  SELECT a->>'Code' || ' ' || (a->>'Message') || ' / ' || (a->'ErrorList'->0->>'SubMessage')
			  FROM zim_api('UserRegister', '{"UserInfo": [{"UserId": "e_a", "UserName": "a", "UserAvatar": ""}]}') a});
		is($out, "660700002 $want / $want", "$enc, $form: zim_api returns the answer, with the text as the database can hold it")
			or diag $err;

		# the queue: the job is done at its first attempt, and sent once
		my $before = sql('postgres', $convpinned_requests);
		$node->safe_psql($db,
			q{SELECT zim_conv_pinned_enqueue('e_a', ARRAY['nobody', 'g2'], ARRAY[0, 2], true)});
		is($node->safe_psql($db, q{SELECT zim_pin_run_jobs()}), '1', "$enc, $form: zim_pin_run_jobs sends the job");
		is($node->safe_psql($db, q{SELECT zim_pin_run_jobs()}), '0', '... and has nothing left to send');
		is($node->safe_psql($db, q{SELECT state || ' ' || attempts || ' ' || last_code FROM zim_pin_job ORDER BY job_id DESC LIMIT 1}),
			'done 1 0', '... which is done at its first attempt');
		is(sql($db, q{SELECT string_agg(conv_id || ' ' || sub_code || ' ' || sub_message, ',') FROM zim_pin_job_failure
			WHERE job_id = (SELECT max(job_id) FROM zim_pin_job)}),
			"nobody 660800001 $want", '... with its failure row, the text as the database can hold it');
		is(sql('postgres', $convpinned_requests) - $before, 1, '... and was sent once');

		# a whole-call failure whose Message is the text: ZP001 and the text,
		# not ZP005
		sql('postgres', qq{SELECT double('Fault', '{"Fault": "code", "Code": 660000002, "Message": "$text"}')});
		($ret, $out, $err) = $node->psql($db,
			q{SET client_encoding = 'UTF8'; SELECT * FROM zim_conv_pinned('e_a', ARRAY['g3'], 2, true)},
			extra_params => ['-v', 'VERBOSITY=verbose']);
		like($err, qr/ERROR:  ZP001: ZIM ConvPinned failed with code 660000002: \Q$want\E$/m,
			"$enc, $form: a failed call raises ZP001 with ZIM's Message as the database can hold it");
	}

	# \u0000 and lone surrogates (high, low, high before a non-surrogate)
	# become "?": nothing is cut short at the zero, nothing is refused
	# (a heredoc: its backslashes are the SQL's, which are jsonb's)
	my $body = <<'EOF';
{\"Code\": 0, \"Message\": \"a\\u0000b\\ud800c\\udc00d\\ud83d\\u0041\", \"RequestId\": \"r\", \"ErrorList\": [{\"ConvId\": \"g4\", \"ConvType\": 2, \"SubCode\": 660800048, \"SubMessage\": \"x\\u0000y\\ud83d\\ude00z \\\\u0000 \\u00e9\\u0022\"}]}
EOF
	chomp $body;
	sql('postgres', qq{SELECT double('Fault', '{"Fault": "body", "Count": 2, "Body": "$body"}')});
	my $tail = $enc eq 'LATIN1' ? '?' : "\xf0\x9f\x98\x80";
	is(sql($db, q{SELECT conv_id || ' ' || sub_code || ' ' || sub_message FROM zim_conv_pinned('e_a', ARRAY['g4'], 2, true)}),
		"g4 660800048 x?y${tail}z \\u0000 \xc3\xa9\"",
		"$enc: \\u0000 and an escaped emoji in a SubMessage: the row, with \"?\" for the zero, an escaped backslash kept");
	is(sql($db, q{SELECT zim_api('ConvPinned', '{"FromUserId": "e_a", "ConvList": [{"ConvId": "g4", "ConvType": 2}], "PinnedType": 1}')->>'Message'}),
		'a?b?c?d?A', "$enc: \\u0000 and lone surrogates in zim_api's answer are \"?\", and the text goes on after them");
}

ok(!$node->log_contains('terminated by signal'), 'no backend crashed');
$node->stop;
done_testing();
