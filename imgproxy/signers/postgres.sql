-- imgproxy: signed image URLs made inside PostgreSQL (13+; tested on 15), the README's
-- "PostgreSQL: signing in the database".
--
--   imgproxy sql postgres | psql -v ON_ERROR_STOP=1 -d yourdb
--
-- Run it as the role that is to own the signing keys (the database owner, say). It creates
-- schema imgproxy, installs pgcrypto into that schema, and creates:
--   imgproxy.signing_keys  (kid, secret, base_url): readable by its owner only
--   imgproxy.sign_url(source, key, params, ttl, "window", durable, sub, kid) -> text
--                          SECURITY DEFINER: it reads the key; its callers never can
-- It grants nothing. Let one role sign (and only sign):
--   GRANT USAGE ON SCHEMA imgproxy TO imgproxy_signer;
--   GRANT EXECUTE ON FUNCTION imgproxy.sign_url(text, text, jsonb, integer, integer, boolean, text, text)
--     TO imgproxy_signer;
--
-- Every function pins search_path to pg_catalog, pg_temp (percent_encode, called most often,
-- names its types and operators in pg_catalog instead) and names every function it calls with
-- its schema (pg_catalog.*, imgproxy.hmac): a caller's search_path, or a function of the same
-- name in a schema it controls, cannot run inside sign_url and see the secret. (Operators and
-- the "C" collation resolve in pg_catalog alone: pg_temp is never searched for operators.)
--
-- The rule is auth/signing.py's; tests/signers/test_postgres_signer.py checks this file against
-- imgproxy/signers/vectors.json on a real server. Re-running the script replaces the functions
-- and keeps the keys.

BEGIN;
-- What this script's statements name resolves in pg_catalog, whatever the installer's path.
SET LOCAL search_path = pg_catalog, pg_temp;

DO $check$
BEGIN
  IF pg_catalog.getdatabaseencoding() OPERATOR(pg_catalog.<>) 'UTF8' THEN
    RAISE EXCEPTION 'imgproxy: the database encoding is %, signing needs UTF8', pg_catalog.getdatabaseencoding();
  END IF;
END
$check$;

CREATE SCHEMA IF NOT EXISTS imgproxy;
REVOKE ALL ON SCHEMA imgproxy FROM PUBLIC;
CREATE EXTENSION IF NOT EXISTS pgcrypto SCHEMA imgproxy;

DO $check$
BEGIN
  IF pg_catalog.to_regprocedure('imgproxy.hmac(bytea, bytea, text)') IS NULL THEN
    RAISE EXCEPTION 'imgproxy: pgcrypto is installed in another schema; imgproxy.sign_url calls imgproxy.hmac'
      USING HINT = 'ALTER EXTENSION pgcrypto SET SCHEMA imgproxy (other callers then qualify its functions)';
  END IF;
END
$check$;

CREATE TABLE IF NOT EXISTS imgproxy.signing_keys (
  kid text PRIMARY KEY CHECK (kid ~ '^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$'),
  secret text NOT NULL CHECK (pg_catalog.octet_length(secret) >= 32),
  base_url text NOT NULL DEFAULT ''
);
REVOKE ALL ON TABLE imgproxy.signing_keys FROM PUBLIC;

-- enc(s): the UTF-8 bytes of s, each outside A-Z a-z 0-9 - . _ ~ (and "/" when keep_slash) as
-- %XX, uppercase. Text made only of those characters (most keys and values) is its own encoding.
-- Called once per name and value, so it has no SET clause (switching search_path on every call
-- halves the signing rate); instead its types and operators are named in pg_catalog too.
CREATE OR REPLACE FUNCTION imgproxy.percent_encode(t pg_catalog.text, keep_slash boolean)
RETURNS pg_catalog.text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
  utf8 pg_catalog.bytea;
  b integer;
  encoded pg_catalog.text := '';
BEGIN
  IF t OPERATOR(pg_catalog.~) (CASE WHEN keep_slash THEN '^[A-Za-z0-9._~/-]*$' ELSE '^[A-Za-z0-9._~-]*$' END) THEN
    RETURN t;
  END IF;
  utf8 := pg_catalog.convert_to(t, 'UTF8');
  FOR i IN 0 .. pg_catalog.length(utf8) OPERATOR(pg_catalog.-) 1 LOOP
    b := pg_catalog.get_byte(utf8, i);
    IF (b OPERATOR(pg_catalog.>=) 48 AND b OPERATOR(pg_catalog.<=) 57)        -- 0-9
       OR (b OPERATOR(pg_catalog.>=) 65 AND b OPERATOR(pg_catalog.<=) 90)     -- A-Z
       OR (b OPERATOR(pg_catalog.>=) 97 AND b OPERATOR(pg_catalog.<=) 122)    -- a-z
       OR b OPERATOR(pg_catalog.=) 45 OR b OPERATOR(pg_catalog.=) 46          -- - .
       OR b OPERATOR(pg_catalog.=) 95 OR b OPERATOR(pg_catalog.=) 126         -- _ ~
       OR (keep_slash AND b OPERATOR(pg_catalog.=) 47) THEN                   -- /
      encoded := encoded OPERATOR(pg_catalog.||) pg_catalog.chr(b);
    ELSE
      encoded := encoded OPERATOR(pg_catalog.||) '%'
                 OPERATOR(pg_catalog.||) pg_catalog.upper(pg_catalog.lpad(pg_catalog.to_hex(b), 2, '0'));
    END IF;
  END LOOP;
  RETURN encoded;
END
$$;

-- (exp, iat) for a URL signed at now: auth/signing.py's stamps(). Whole-second ttl and window.
CREATE OR REPLACE FUNCTION imgproxy.stamps(now numeric, ttl integer, "window" integer, durable boolean,
                                           OUT exp bigint, OUT iat bigint)
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  step bigint := COALESCE("window", 0);
BEGIN
  IF now IS NULL OR now < 0 THEN
    RAISE EXCEPTION 'imgproxy: now must be unix seconds';
  END IF;
  IF step < 0 THEN
    RAISE EXCEPTION 'imgproxy: window must be 0 or more seconds';
  END IF;
  IF COALESCE(durable, false) THEN
    exp := NULL;
    iat := pg_catalog.trunc(now)::bigint / GREATEST(step, 1) * GREATEST(step, 1);
    RETURN;
  END IF;
  IF ttl IS NULL OR ttl < 1 THEN
    RAISE EXCEPTION 'imgproxy: ttl must be 1 or more seconds';
  END IF;
  exp := pg_catalog.trunc(now + ttl)::bigint;
  IF step = 0 THEN
    iat := exp - ttl;
  ELSE
    exp := (exp + step - 1) / step * step;
    iat := exp - (ttl + step - 1) / step * step - step;
  END IF;
END
$$;

-- The signed URL for given stamps and secret (no table, no clock): the spec's steps 1-5.
-- params: a JSON object of strings and integers (written in decimal); names other than the
-- reserved exp, iat, kid, sig, sub. Refuses what auth/signing.py refuses.
CREATE OR REPLACE FUNCTION imgproxy.signed_url(secret text, kid text, base_url text, source text, key text,
                                               params jsonb, exp bigint, iat bigint, sub text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  pairs jsonb;
  value jsonb;
  names text[] := '{}';
  vals text[] := '{}';
  name text;
  encoded text;
  j integer;
  signed_query text := '';
  canonical text;
BEGIN
  params := COALESCE(params, '{}');
  IF pg_catalog.jsonb_typeof(params) <> 'object' THEN
    RAISE EXCEPTION 'imgproxy: params must be a JSON object';
  END IF;
  IF source IS NULL OR key IS NULL OR key = '' THEN
    RAISE EXCEPTION 'imgproxy: source and key are required';
  END IF;
  IF pg_catalog.octet_length(key) > 1024 OR pg_catalog.strpos(key, E'\\') > 0
     OR key ~ '[\x01-\x1f\x7f-\x9f]' OR key ~ '(^|/)\.\.?(/|$)' THEN
    RAISE EXCEPTION 'imgproxy: key is refused: over 1024 bytes, a backslash, a control character or a . or .. segment';
  END IF;
  IF sub IS NOT NULL AND (pg_catalog.length(sub) NOT BETWEEN 1 AND 128 OR sub ~ '[\x01-\x1f\x7f-\x9f\u2028\u2029]') THEN
    RAISE EXCEPTION 'imgproxy: sub must be 1-128 characters without control characters';
  END IF;
  IF exp IS NULL AND iat IS NULL THEN
    RAISE EXCEPTION 'imgproxy: a signed URL carries exp, iat, or both';
  END IF;

  -- The parameters as (name, text) in code point order (COLLATE "C": UTF-8 byte order), by
  -- insertion into two arrays: plain expressions only, no query per call. keyvalue() lists
  -- the object's members as {"key", "value"} objects.
  pairs := pg_catalog.jsonb_path_query_array(params, '$.keyvalue()');
  FOR i IN 0 .. pg_catalog.jsonb_array_length(pairs) - 1 LOOP
    name := pairs -> i ->> 'key';
    value := pairs -> i -> 'value';
    IF name IN ('', 'exp', 'iat', 'kid', 'sig', 'sub')
       OR pg_catalog.jsonb_typeof(value) NOT IN ('string', 'number')
       OR (pg_catalog.jsonb_typeof(value) = 'number' AND pg_catalog.scale((value #>> '{}')::numeric) <> 0) THEN
      RAISE EXCEPTION 'imgproxy: parameter "%": names are not empty nor exp, iat, kid, sig, sub; values are strings or integers', name;
    END IF;
    names := names || name;
    vals := vals || (value #>> '{}');
  END LOOP;
  IF exp IS NOT NULL THEN names := names || 'exp'::text; vals := vals || exp::text; END IF;
  IF iat IS NOT NULL THEN names := names || 'iat'::text; vals := vals || iat::text; END IF;
  IF signed_url.kid IS NOT NULL THEN names := names || 'kid'::text; vals := vals || signed_url.kid; END IF;
  IF sub IS NOT NULL THEN names := names || 'sub'::text; vals := vals || sub; END IF;
  FOR i IN 2 .. pg_catalog.cardinality(names) LOOP
    name := names[i];
    encoded := vals[i];
    j := i - 1;
    WHILE j >= 1 AND names[j] COLLATE "C" > name LOOP
      names[j + 1] := names[j];
      vals[j + 1] := vals[j];
      j := j - 1;
    END LOOP;
    names[j + 1] := name;
    vals[j + 1] := encoded;
  END LOOP;
  FOR i IN 1 .. pg_catalog.cardinality(names) LOOP
    signed_query := signed_query || CASE WHEN i > 1 THEN '&' ELSE '' END
                    || imgproxy.percent_encode(names[i], false) || '=' || imgproxy.percent_encode(vals[i], false);
  END LOOP;
  canonical := '/img/' || imgproxy.percent_encode(source, false) || '/' || imgproxy.percent_encode(key, true)
               || '?' || signed_query;
  RETURN pg_catalog.rtrim(COALESCE(base_url, ''), '/') || canonical || '&sig='
         || pg_catalog.translate(pg_catalog.rtrim(pg_catalog.encode(
              imgproxy.hmac(pg_catalog.convert_to(canonical, 'UTF8'), pg_catalog.convert_to(secret, 'UTF8'), 'sha256'),
              'base64'), '='), '+/', '-_');
END
$$;

-- A signed URL for source/key with a key from imgproxy.signing_keys (kid NULL: the only one),
-- stamped at now(), the transaction's time: every row of one query gets the same exp, and with
-- a window, every query within one window the same URLs. The URL always names its kid.
CREATE OR REPLACE FUNCTION imgproxy.sign_url(source text, key text, params jsonb DEFAULT '{}',
                                             ttl integer DEFAULT 3600, "window" integer DEFAULT 0,
                                             durable boolean DEFAULT false, sub text DEFAULT NULL,
                                             kid text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  chosen record;
  stamped record;
BEGIN
  IF sign_url.kid IS NULL THEN
    SELECT k.kid, k.secret, k.base_url, pg_catalog.count(*) OVER () AS keys INTO chosen
    FROM imgproxy.signing_keys AS k LIMIT 1;
    IF COALESCE(chosen.keys, 0) <> 1 THEN
      RAISE EXCEPTION 'imgproxy.sign_url: kid is required (imgproxy.signing_keys holds % keys)', COALESCE(chosen.keys, 0);
    END IF;
  ELSE
    SELECT k.kid, k.secret, k.base_url INTO chosen FROM imgproxy.signing_keys AS k WHERE k.kid = sign_url.kid;
    IF NOT FOUND THEN
      RAISE EXCEPTION 'imgproxy.sign_url: no signing key "%"', sign_url.kid;
    END IF;
  END IF;
  stamped := imgproxy.stamps(EXTRACT(epoch FROM pg_catalog.now())::numeric, ttl, "window", durable);
  RETURN imgproxy.signed_url(chosen.secret, chosen.kid, chosen.base_url, source, key, params,
                             stamped.exp, stamped.iat, sub);
END
$$;

REVOKE ALL ON FUNCTION imgproxy.percent_encode(text, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION imgproxy.stamps(numeric, integer, integer, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION imgproxy.signed_url(text, text, text, text, text, jsonb, bigint, bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION imgproxy.sign_url(text, text, jsonb, integer, integer, boolean, text, text) FROM PUBLIC;

COMMIT;
