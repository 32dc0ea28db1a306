# Hardening, part 2, item 1: objects planted before CREATE EXTENSION.
#
# CREATE EXTENSION and ALTER EXTENSION UPDATE run the scripts with the
# target schema on search_path, and a view keeps what it bound then, to run
# it with the rights of whoever reads it.  A database owner (not a
# superuser) plants, in public, exact look-alikes of every function and
# operator the scripts use, each of which records that it ran and as whom.
# Then a superuser installs zim_pin fresh in one of her databases, and 1.0
# updated to the default version in another, reads every view and calls
# every function: none of her code may run.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use PostgreSQL::Test::Utils;
use Test::More;
use ZimTest;

my $node = zim_node('planted');
$node->safe_psql('postgres', q{SELECT double('Reset'); SELECT register('p_a', 'p_b', 'p_eve_fresh', 'p_eve_upd')});
$node->safe_psql('postgres', q{CREATE ROLE eve LOGIN});

# what eve plants: for each, the SQL that creates it (as eve, in public)
my $plants = q{
	CREATE TABLE public.ran (what text, usr text, super boolean);
	GRANT INSERT, SELECT ON public.ran TO PUBLIC;
	CREATE FUNCTION public.note(what text) RETURNS void LANGUAGE sql AS
		$$ INSERT INTO public.ran SELECT what, current_user, rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user $$;

	-- the three spots of 1.0 and 1.1's zim_pin_backlog
	CREATE FUNCTION public.cardinality(text[]) RETURNS integer LANGUAGE sql AS
		$$ SELECT public.note('cardinality(text[])'); SELECT pg_catalog.cardinality($1) $$;
	CREATE FUNCTION public.numdiv(numeric, integer) RETURNS numeric LANGUAGE sql AS
		$$ SELECT public.note('numeric / integer'); SELECT $1 OPERATOR(pg_catalog./) $2::numeric $$;
	CREATE OPERATOR public./ (LEFTARG = numeric, RIGHTARG = integer, FUNCTION = public.numdiv);
	CREATE FUNCTION public.make_interval(secs numeric) RETURNS interval LANGUAGE sql AS
		$$ SELECT public.note('make_interval(secs numeric)'); SELECT pg_catalog.make_interval(secs => $1::float8) $$;
	CREATE FUNCTION public.make_interval(secs double precision) RETURNS interval LANGUAGE sql AS
		$$ SELECT public.note('make_interval(secs double precision)'); SELECT pg_catalog.make_interval(secs => $1) $$;

	-- every other function the scripts call, with their exact argument types
	CREATE FUNCTION public.ceil(numeric) RETURNS numeric LANGUAGE sql AS
		$$ SELECT public.note('ceil(numeric)'); SELECT pg_catalog.ceil($1) $$;
	CREATE FUNCTION public.current_setting(text, boolean) RETURNS text LANGUAGE sql AS
		$$ SELECT public.note('current_setting(text, boolean)'); SELECT pg_catalog.current_setting($1, $2) $$;
	CREATE FUNCTION public.current_setting(text) RETURNS text LANGUAGE sql AS
		$$ SELECT public.note('current_setting(text)'); SELECT pg_catalog.current_setting($1) $$;
	CREATE FUNCTION public.clock_timestamp() RETURNS timestamptz LANGUAGE sql AS
		$$ SELECT public.note('clock_timestamp()'); SELECT pg_catalog.clock_timestamp() $$;
	CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE sql AS
		$$ SELECT public.note('now()'); SELECT pg_catalog.now() $$;
	CREATE FUNCTION public.sum_sf(numeric, numeric) RETURNS numeric LANGUAGE sql AS
		$$ SELECT public.note('sum(numeric)'); SELECT coalesce($1, 0::numeric) OPERATOR(pg_catalog.+) $2 $$;
	CREATE AGGREGATE public.sum(numeric) (SFUNC = public.sum_sf, STYPE = numeric);
	CREATE FUNCTION public.min_sf(timestamptz, timestamptz) RETURNS timestamptz LANGUAGE sql AS
		$$ SELECT public.note('min(timestamptz)'); SELECT $2 $$;
	CREATE AGGREGATE public.min(timestamptz) (SFUNC = public.min_sf, STYPE = timestamptz);

	-- closer matches than pg_catalog's polymorphic functions, for 1.4's
	-- zim_pin_retry_failed and zim_pin_backlog_by_action
	CREATE FUNCTION public.array_position(text[], text) RETURNS integer LANGUAGE sql AS
		$$ SELECT public.note('array_position(text[], text)'); SELECT pg_catalog.array_position($1, $2) $$;
	CREATE FUNCTION public.unnest(text[]) RETURNS SETOF text LANGUAGE sql AS
		$$ SELECT public.note('unnest(text[])'); SELECT pg_catalog.unnest($1) $$;
	CREATE FUNCTION public.unnest(integer[]) RETURNS SETOF integer LANGUAGE sql AS
		$$ SELECT public.note('unnest(integer[])'); SELECT pg_catalog.unnest($1) $$;

	-- every operator, with the operand types the scripts give it
	CREATE FUNCTION public.tstz_minus(timestamptz, timestamptz) RETURNS interval LANGUAGE sql AS
		$$ SELECT public.note('timestamptz - timestamptz'); SELECT $1 OPERATOR(pg_catalog.-) $2 $$;
	CREATE OPERATOR public.- (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = public.tstz_minus);
	CREATE FUNCTION public.tstz_minus_iv(timestamptz, interval) RETURNS timestamptz LANGUAGE sql AS
		$$ SELECT public.note('timestamptz - interval'); SELECT $1 OPERATOR(pg_catalog.-) $2 $$;
	CREATE OPERATOR public.- (LEFTARG = timestamptz, RIGHTARG = interval, FUNCTION = public.tstz_minus_iv);
	CREATE FUNCTION public.num_div(numeric, numeric) RETURNS numeric LANGUAGE sql AS
		$$ SELECT public.note('numeric / numeric'); SELECT $1 OPERATOR(pg_catalog./) $2 $$;
	CREATE OPERATOR public./ (LEFTARG = numeric, RIGHTARG = numeric, FUNCTION = public.num_div);
	CREATE FUNCTION public.text_eq(text, text) RETURNS boolean LANGUAGE sql AS
		$$ SELECT public.note('text = text'); SELECT $1 OPERATOR(pg_catalog.=) $2 $$;
	CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text, FUNCTION = public.text_eq);
	CREATE FUNCTION public.text_ne(text, text) RETURNS boolean LANGUAGE sql AS
		$$ SELECT public.note('text <> text'); SELECT $1 OPERATOR(pg_catalog.<>) $2 $$;
	CREATE OPERATOR public.<> (LEFTARG = text, RIGHTARG = text, FUNCTION = public.text_ne);
	CREATE FUNCTION public.int8_eq(bigint, bigint) RETURNS boolean LANGUAGE sql AS
		$$ SELECT public.note('bigint = bigint'); SELECT $1 OPERATOR(pg_catalog.=) $2 $$;
	CREATE OPERATOR public.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = public.int8_eq);
	CREATE FUNCTION public.int8_int4_eq(bigint, integer) RETURNS boolean LANGUAGE sql AS
		$$ SELECT public.note('bigint = integer'); SELECT $1 OPERATOR(pg_catalog.=) $2 $$;
	CREATE OPERATOR public.= (LEFTARG = bigint, RIGHTARG = integer, FUNCTION = public.int8_int4_eq);
};

sub planted_db
{
	my ($db) = @_;
	$node->safe_psql('postgres', qq{CREATE DATABASE $db OWNER eve});
	$node->safe_psql($db, $plants, extra_params => ['-U', 'eve']);
}

# the superuser installs, then reads and calls everything
sub use_everything
{
	my ($db) = @_;
	$node->safe_psql($db, q{
		SELECT zim_conv_pinned_enqueue('p_a', ARRAY['g1', 'g2'], 2, true);
		SELECT zim_conv_pinned_enqueue('p_a', ARRAY['p_b', 'g3'], ARRAY[0, 2], false);
		SELECT zim_conv_pinned_enqueue('nobody', ARRAY['g1'], 2, true);
	});
	my $out = $node->safe_psql($db, q{
		SELECT pending, pending_requests, oldest_pending_age > interval '0', expected_drain_time > interval '0'
		FROM zim_pin_backlog;
	});
	is($out, '3|3|t|t', "$db: zim_pin_backlog as a superuser, three jobs pending");
	$node->safe_psql($db, q{
		SELECT zim_pin_run_jobs();
		SELECT * FROM zim_pin_backlog;
		SELECT * FROM zim_pin_failure;
		SELECT * FROM zim_pin_stats;
		SELECT zim_pin_stats_reset();
		SELECT zim_pin_retry_failed();
		SELECT zim_pin_retry_failed(now() - interval '1 hour', 'nobody');
		SELECT * FROM zim_pin_backlog;
		SELECT * FROM zim_conv_pinned('p_a', ARRAY['g4'], 2, true);
		SELECT * FROM zim_conv_pinned('p_a', ARRAY['g4'], ARRAY[2], false);
		SELECT zim_api('QueryConversationList', '{"FromUserId": "p_a", "Next": 0, "Count": 10}');
		SELECT zim_pin_signature(1, '0123456789abcdef', 'x', 1);
		SELECT zim_pin_run_jobs();
		SELECT * FROM zim_pin_backlog;
	});
	is($node->safe_psql($db, q{SELECT count(*) FROM zim_pin_failure WHERE from_user_id = 'nobody'}), '2',
		"$db: the queue worked (the unregistered user's job and its replay failed)");
	# the queue of every Action (issue 17): the enqueue functions in both
	# forms, zim_pin_backlog_by_action, zim_pin_failure's new columns, and
	# a replay of a failed job of each Action (p_a mutes a peer of its own
	# in each database: a second mute would be "already muted")
	for (1 .. 30)
	{
		last if $node->safe_psql($db, q{SELECT count(*) FROM zim_pin_job WHERE state = 'pending'}) eq '0';
		$node->safe_psql($db, q{SELECT zim_pin_run_jobs()});
		sleep 1;
	}
	$node->safe_psql($db, qq{
		SELECT zim_silence_conv_notification_enqueue('p_a', ARRAY['p_$db'], 0, true);
		SELECT zim_silence_conv_notification_enqueue('nobody4', ARRAY['g1'], ARRAY[2], false);
		SELECT zim_set_conv_mark_enqueue('p_a', ARRAY['p_$db'], 0, 2, true);
		SELECT zim_set_conv_mark_enqueue('nobody4', ARRAY['g1'], ARRAY[2], 30, false);
		SELECT zim_clear_conversation_unread_enqueue('p_a', ARRAY['p_$db'], 0);
		SELECT zim_clear_conversation_unread_enqueue('nobody4', ARRAY['g1'], ARRAY[2]);
		SELECT zim_delete_conv_enqueue('p_a', ARRAY['p_$db'], 0);
		SELECT zim_delete_conv_enqueue('nobody4', ARRAY['g1'], ARRAY[2]);
	});
	is($node->safe_psql($db, q{SELECT string_agg(action || ':' || pending || ':' || pending_requests || ':' || (oldest_pending_age > interval '0')
			|| ':' || (expected_drain_time > interval '0'), ',' ORDER BY action) FROM zim_pin_backlog_by_action;
		SELECT pending, pending_requests FROM zim_pin_backlog}),
		"ClearConversationUnread:2:2:true:true,DeleteConv:2:2:true:true,SetConvMark:2:2:true:true,SilenceConvNotification:2:2:true:true\n8|8",
		"$db: zim_pin_backlog_by_action as a superuser, two jobs of each new Action pending");
	for (1 .. 30)
	{
		$node->safe_psql($db, q{SELECT zim_pin_run_jobs()});
		last if $node->safe_psql($db, q{SELECT count(*) FROM zim_pin_job WHERE state = 'pending'}) eq '0';
		sleep 1;
	}
	$node->safe_psql($db, q{
		SELECT * FROM zim_pin_failure;
		SELECT * FROM zim_pin_backlog_by_action;
		SELECT zim_pin_retry_failed(now() - interval '1 hour', 'nobody4');
		SELECT * FROM zim_pin_backlog_by_action;
		SELECT * FROM zim_pin_backlog;
	});
	for (1 .. 30)
	{
		$node->safe_psql($db, q{SELECT zim_pin_run_jobs()});
		last if $node->safe_psql($db, q{SELECT count(*) FROM zim_pin_job WHERE state = 'pending'}) eq '0';
		sleep 1;
	}
	is($node->safe_psql($db, q{SELECT string_agg(DISTINCT action || ':' || job_state || ':' || sub_code, ',') || ' ' || count(*) FROM zim_pin_failure WHERE from_user_id = 'nobody4'}),
		'ClearConversationUnread:failed:660500002,DeleteConv:failed:660500002,SetConvMark:failed:660500002,SilenceConvNotification:failed:660500002 8',
		"$db: the queue worked for every Action (the unregistered user's jobs and their replays failed)");
	is($node->safe_psql($db, q{SELECT string_agg(action || ':' || state, ',' ORDER BY job_id) FROM zim_pin_job WHERE from_user_id = 'p_a' AND action <> 'ConvPinned'}),
		'SilenceConvNotification:done,SetConvMark:done,ClearConversationUnread:done,DeleteConv:done',
		"$db: ... and p_a's jobs of every Action are done");
	is($node->safe_psql($db, q{SELECT coalesce(string_agg(DISTINCT what || ' as ' || usr, ', '), 'none') FROM public.ran}),
		'none', "$db: none of the planted functions and operators ran");
}

# --- a fresh CREATE EXTENSION after the plants --------------------------------
planted_db('eve_fresh');
$node->safe_psql('eve_fresh', q{CREATE EXTENSION zim_pin});
use_everything('eve_fresh');

# --- 1.0 installed after the plants, then ALTER EXTENSION UPDATE ----------------
planted_db('eve_upd');
$node->safe_psql('eve_upd', q{CREATE EXTENSION zim_pin VERSION '1.0'});
$node->safe_psql('eve_upd', q{ALTER EXTENSION zim_pin UPDATE});
is($node->safe_psql('eve_upd', q{SELECT extversion FROM pg_extension WHERE extname = 'zim_pin'}),
	$node->safe_psql('postgres', q{SELECT default_version FROM pg_available_extensions WHERE name = 'zim_pin'}),
	'eve_upd: updated from 1.0 to the default version');
use_everything('eve_upd');

# --- 1.1 as it was installed before 1.2: the update re-binds the view ---------
# (an install of 1.1 made before its script was qualified, simulated by
# binding the view to eve's cardinality(text[]) by hand)
planted_db('eve_old11');
$node->safe_psql('eve_old11', q{CREATE EXTENSION zim_pin VERSION '1.1'});
$node->safe_psql('eve_old11', q{
	CREATE OR REPLACE VIEW zim_pin_backlog AS
	SELECT count(*) AS pending,
	       clock_timestamp() - min(enqueued_at) AS oldest_pending_age,
	       coalesce(sum(ceil(cardinality(conv_ids)::numeric / 20::integer)), 0)::bigint AS pending_requests,
	       make_interval(secs => coalesce(sum(ceil(cardinality(conv_ids)::numeric / 20::integer)), 0) / 20::numeric)
	           AS expected_drain_time
	FROM zim_pin_job WHERE state = 'pending';
	SELECT zim_conv_pinned_enqueue('p_a', ARRAY['g1'], 2, true);
	SELECT * FROM zim_pin_backlog;
});
ok($node->safe_psql('eve_old11', q{SELECT count(*) FROM public.ran WHERE what = 'cardinality(text[])'}) > 0,
	'eve_old11: a view bound to a planted cardinality(text[]) runs it (the test can fail)');
$node->safe_psql('eve_old11', q{TRUNCATE public.ran; ALTER EXTENSION zim_pin UPDATE; SELECT * FROM zim_pin_backlog});
is($node->safe_psql('eve_old11', q{SELECT count(*) FROM public.ran}), '0',
	'eve_old11: after ALTER EXTENSION UPDATE, reading zim_pin_backlog runs none of it');

$node->stop;
done_testing();
