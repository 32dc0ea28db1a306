/*-------------------------------------------------------------------------
 *
 * sign.c
 *	  The ZIM v2.0 request signature and the signed URL.
 *
 *	  Signature = hex(MD5(AppId || SignatureNonce || ServerSecret || Timestamp))
 *
 * Every request, retries included, gets a fresh 8-byte nonce from
 * pg_strong_random and the current time.  The buffer that held the secret
 * is wiped before it is freed; callers wipe the URL after use because it
 * carries the signature.
 *
 * Nothing here may log, print or put in a message the secret, a signature
 * or a signed URL.
 *
 * Copyright (c) 2026, zim_pin developers; PostgreSQL License.
 *
 *-------------------------------------------------------------------------
 */
#include "zim_pin.h"

#include <time.h>

#include <openssl/evp.h>

#include "utils/builtins.h"

PG_FUNCTION_INFO_V1(zim_pin_signature);


#define NONCE_BYTES 8

static void
hex_encode_lower(const unsigned char *in, size_t len, char *out)
{
	static const char hex[] = "0123456789abcdef";

	for (size_t i = 0; i < len; i++)
	{
		out[2 * i] = hex[in[i] >> 4];
		out[2 * i + 1] = hex[in[i] & 0x0f];
	}
	out[2 * len] = '\0';
}

/*
 * Compute the signature into out_hex (33 bytes).
 */
void
ZimSignature(uint32 app_id, const char *nonce, const char *secret,
			 int64 timestamp, char *out_hex)
{
	/*
	 * The input holds the secret: one buffer of the exact size, so that no
	 * copy is left behind by a buffer that grows (as a StringInfo's does),
	 * wiped before it is freed.
	 */
	size_t		size = 10 + strlen(nonce) + strlen(secret) + 20 + 1;
	char	   *input = palloc(size);
	int			len;
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int digest_len = 0;
	int			ok;

	len = snprintf(input, size, "%u%s%s" INT64_FORMAT,
				   app_id, nonce, secret, timestamp);
	ok = len > 0 && (size_t) len < size &&
		EVP_Digest(input, len, digest, &digest_len, EVP_md5(), NULL);

	explicit_bzero(input, size);
	pfree(input);

	if (!ok || digest_len != 16)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("could not compute the MD5 signature"),
				 errhint("MD5 may be disabled by the OpenSSL configuration (FIPS mode).")));

	hex_encode_lower(digest, 16, out_hex);
	explicit_bzero(digest, sizeof(digest));
}

/*
 * Append to url the base URL and the public parameters of one request,
 * freshly signed.  The caller must wipe url->data after use.
 */
void
ZimSignedUrl(StringInfo url, const char *base, const char *action)
{
	unsigned char raw[NONCE_BYTES];
	char		nonce[NONCE_BYTES * 2 + 1];
	char		signature[33];
	int64		now = (int64) time(NULL);
	uint32		app_id = ZimAppId();

	if (!pg_strong_random(raw, sizeof(raw)))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate a random nonce")));
	hex_encode_lower(raw, sizeof(raw), nonce);

	ZimSignature(app_id, nonce, ZimServerSecret(), now, signature);

	/* action was checked to be [A-Za-z0-9] only, so needs no escaping */
	appendStringInfo(url,
					 "%s?Action=%s&AppId=%u&SignatureNonce=%s&Timestamp=" INT64_FORMAT
					 "&SignatureVersion=2.0&Signature=%s",
					 base, action, app_id, nonce, now, signature);
	explicit_bzero(signature, sizeof(signature));
}

/*
 * zim_pin_signature(app_id bigint, nonce text, secret text, ts bigint)
 *
 * The v2.0 signature of the given values, to check the signing code
 * against the vendor's test vector.  It knows nothing of the settings.
 */
Datum
zim_pin_signature(PG_FUNCTION_ARGS)
{
	int64		app_id;
	char		out[33];
	char	   *nonce;
	char	   *secret;

	for (int i = 0; i < 4; i++)
		ZimRequireNotNull(fcinfo, i,
							 i == 0 ? "app_id" : i == 1 ? "nonce" : i == 2 ? "secret" : "ts");
	app_id = PG_GETARG_INT64(0);
	if (app_id < 1 || app_id > UINT32_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("app_id must be between 1 and 4294967295")));
	nonce = text_to_cstring(PG_GETARG_TEXT_PP(1));
	secret = text_to_cstring(PG_GETARG_TEXT_PP(2));
	ZimSignature((uint32) app_id, nonce, secret, PG_GETARG_INT64(3), out);
	explicit_bzero(secret, strlen(secret));
	PG_RETURN_TEXT_P(cstring_to_text(out));
}
