"""imgproxy/signers/postgres.sql on a real PostgreSQL server (tests/pg_cluster.py): installed as
``imgproxy sql postgres`` prints it, it signs every vector byte for byte, ``sign_url`` agrees
with UrlSigner at the transaction's now(), a caller cannot reach the secret (not by SELECT, not
by a shadowing function on its search_path), and imgproxy serves what it signs.

No skip: CI installs postgresql (.ci/run), so missing binaries fail here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import pytest
from pg_cluster import PgCluster, throwaway_cluster
from processes import PHOTO, http_get, launch_server, run
from support import SIGNING_KEY, config_data

from imgproxy.auth.signing import UrlSigner
from imgproxy.signers import sql_script
from imgproxy.signers.vectors import load_vectors, text_params

# The SQL signer signs image URLs (/img/...) only; /meta URLs are signed by the others (README).
VECTORS: Final = [v for v in load_vectors() if v.case.route == "img"]
IDS: Final = [v.case.name for v in VECTORS]
SIGNER_ROLE: Final = "imgproxy_signer"
SIGN_URL: Final = "imgproxy.sign_url(text, text, jsonb, integer, integer, boolean, text, text)"
KEY_SECRET: Final = "db-signing-key-0123456789abcdef-0123456789"


def lit(value: str | int | None) -> str:
    """A SQL literal (standard_conforming_strings is on): NULL, a number, or a quoted string."""
    if value is None:
        return "NULL"
    if isinstance(value, int):
        return str(value)
    return "'" + value.replace("'", "''") + "'"


def jsonb(params: Mapping[str, Any]) -> str:
    return lit(json.dumps(dict(params), ensure_ascii=False)) + "::jsonb"


@pytest.fixture(scope="module")
def pg() -> Iterator[PgCluster]:
    """A throwaway server with the script installed as `imgproxy sql postgres` prints it, and
    the two grants the README gives to imgproxy_signer; "outsider" is a role without them."""
    printed = run("sql", "postgres")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == sql_script("postgres")
    with throwaway_cluster() as cluster:
        cluster.psql(printed.stdout)
        cluster.psql(f"""
            CREATE ROLE {SIGNER_ROLE} NOLOGIN;
            CREATE ROLE outsider NOLOGIN;
            GRANT USAGE ON SCHEMA imgproxy TO {SIGNER_ROLE}, outsider;
            GRANT EXECUTE ON FUNCTION {SIGN_URL} TO {SIGNER_ROLE};
            CREATE SCHEMA caller AUTHORIZATION {SIGNER_ROLE};
        """)
        yield cluster


def with_key(kid: str, secret: str, base_url: str, statements: str, *, role: str = SIGNER_ROLE) -> str:
    """``statements`` in a transaction that holds only this key, run as ``role``, rolled back."""
    return f"""
        BEGIN;
        DELETE FROM imgproxy.signing_keys;
        INSERT INTO imgproxy.signing_keys VALUES ({lit(kid)}, {lit(secret)}, {lit(base_url)});
        SET LOCAL ROLE {role};
        {statements}
        ROLLBACK;
    """


def sign_call(source: str, key: str, params: Mapping[str, Any] | None = None, *, ttl: int = 3600,
              window: int = 0, durable: bool = False, sub: str | None = None, kid: str | None = None) -> str:
    return (f"SELECT imgproxy.sign_url({lit(source)}, {lit(key)}, {jsonb(params or {})}, {ttl}, {window}, "
            f"{str(durable).lower()}, {lit(sub)}, {lit(kid)});")


# --- the vectors, byte for byte -------------------------------------------------------------------


@pytest.fixture(scope="module")
def signed_vectors(pg: PgCluster) -> list[list[str]]:
    """Per vector, the owner's call of the clock-free parts: (exp, iat, URL) at the vector's now
    (given as its exact decimal, which SQL keeps as numeric)."""
    statements = "".join(
        f"SELECT s.exp, s.iat, imgproxy.signed_url({lit(c.secret)}, {lit(c.kid)}, {lit(c.base_url)}, "
        f"{lit(c.source)}, {lit(c.key)}, {jsonb(c.params)}, s.exp, s.iat, {lit(c.sub)}) "
        f"FROM imgproxy.stamps({c.now!r}, {c.ttl}, {c.window}, {str(c.durable).lower()}) AS s;\n"
        for c in (v.case for v in VECTORS))
    return [line.split("|") for line in pg.rows(statements)]


@pytest.mark.parametrize("index", range(len(VECTORS)), ids=IDS)
def test_signed_url_produces_each_vector(signed_vectors: list[list[str]], index: int) -> None:
    expected = VECTORS[index].expected
    assert signed_vectors[index] == [str(expected.exp) if expected.exp is not None else "",
                                     str(expected.iat), expected.url]


@pytest.fixture(scope="module")
def signed_at_now(pg: PgCluster) -> list[tuple[float, str]]:
    """Per vector, sign_url called by imgproxy_signer with the vector's key as the only row (kid
    NULL where the vector has none), and the transaction's now() read in the same transaction."""
    script = "".join(
        with_key(c.kid or "only", c.secret, c.base_url,
                 "SELECT extract(epoch FROM now());\n"
                 + sign_call(c.source, c.key, c.params, ttl=c.ttl, window=c.window, durable=c.durable,
                             sub=c.sub, kid=c.kid))
        for c in (v.case for v in VECTORS))
    lines = pg.rows(script)
    return [(float(lines[i]), lines[i + 1]) for i in range(0, len(lines), 2)]


@pytest.mark.parametrize("index", range(len(VECTORS)), ids=IDS)
def test_sign_url_is_url_signer_at_the_transactions_now(signed_at_now: list[tuple[float, str]],
                                                        index: int) -> None:
    """now() has microseconds; as a float it is within 2.4e-7 s of the decimal, and an exact
    microsecond is at least 1e-6 from the next whole second, so Python truncates it as SQL does.
    The URL names the row's kid even when the call gave none."""
    case = VECTORS[index].case
    now, url = signed_at_now[index]
    python = UrlSigner(case.secret, case.kid or "only", case.base_url).sign(
        case.source, case.key, ttl=case.ttl, params=text_params(case.params), now=now, window=case.window,
        durable=case.durable, sub=case.sub)
    assert url == python


# --- which key ------------------------------------------------------------------------------------


def test_kid_null_with_several_keys_is_refused(pg: PgCluster) -> None:
    script = with_key("k1", KEY_SECRET, "", f"""
        SET LOCAL ROLE NONE;
        INSERT INTO imgproxy.signing_keys VALUES ('k2', {lit(KEY_SECRET)}, '');
        SET LOCAL ROLE {SIGNER_ROLE};
        {sign_call("photos", "a.jpg")}""")
    result = pg.psql(script, check=False)
    assert result.returncode != 0
    assert "kid is required (imgproxy.signing_keys holds 2 keys)" in result.stderr


def test_kid_null_with_no_key_is_refused(pg: PgCluster) -> None:
    script = with_key("k1", KEY_SECRET, "", f"""
        SET LOCAL ROLE NONE;
        DELETE FROM imgproxy.signing_keys;
        SET LOCAL ROLE {SIGNER_ROLE};
        {sign_call("photos", "a.jpg")}""")
    result = pg.psql(script, check=False)
    assert "kid is required (imgproxy.signing_keys holds 0 keys)" in result.stderr


def test_an_unknown_kid_is_refused(pg: PgCluster) -> None:
    result = pg.psql(with_key("k1", KEY_SECRET, "", sign_call("photos", "a.jpg", kid="k9")), check=False)
    assert result.returncode != 0
    assert 'no signing key "k9"' in result.stderr


def test_a_named_kid_picks_its_key(pg: PgCluster) -> None:
    script = with_key("k1", KEY_SECRET, "", f"""
        SET LOCAL ROLE NONE;
        INSERT INTO imgproxy.signing_keys VALUES ('k2', {lit(KEY_SECRET[::-1])}, 'https://b.example');
        SET LOCAL ROLE {SIGNER_ROLE};
        SELECT extract(epoch FROM now());
        {sign_call("photos", "a.jpg", kid="k2")}""")
    now, url = pg.rows(script)
    signer = UrlSigner(KEY_SECRET[::-1], "k2", "https://b.example")
    assert url == signer.sign("photos", "a.jpg", now=float(now))


@pytest.mark.parametrize(("kid", "secret"), [("", KEY_SECRET), ("k 1", KEY_SECRET), ("k1", "short")],
                         ids=["empty-kid", "kid-with-space", "short-secret"])
def test_the_keys_table_refuses_what_the_config_refuses(pg: PgCluster, kid: str, secret: str) -> None:
    result = pg.psql(f"INSERT INTO imgproxy.signing_keys VALUES ({lit(kid)}, {lit(secret)}, '');",
                     check=False)
    assert result.returncode != 0
    assert "violates check constraint" in result.stderr


# --- what it refuses --------------------------------------------------------------------------------

REFUSED: Final[dict[str, dict[str, Any]]] = {
    "reserved-exp": {"params": {"exp": "1"}},
    "reserved-iat": {"params": {"iat": 1}},
    "reserved-kid": {"params": {"kid": "k2"}},
    "reserved-sig": {"params": {"sig": "x"}},
    "reserved-sub": {"params": {"sub": "x"}},
    "empty-name": {"params": {"": "x"}},
    "fractional-number": {"params": {"w": 1.5}},
    "integer-written-as-fraction": {"params": {"w": 1.0}},
    "boolean": {"params": {"w": True}},
    "null": {"params": {"w": None}},
    "object": {"params": {"w": {"a": 1}}},
    "array": {"params": {"w": [1]}},
    "dot-dot-key": {"key": "a/../b.jpg"},
    "dot-key": {"key": "./b.jpg"},
    "empty-key": {"key": ""},
    "backslash-key": {"key": "a\\b.jpg"},
    "control-character-in-key": {"key": "a\nb.jpg"},
    "c1-control-in-key": {"key": "a\u0085b.jpg"},
    "long-key": {"key": "k" * 1025},
    "sub-too-long": {"sub": "x" * 129},
    "empty-sub": {"sub": ""},
    "sub-with-line-separator": {"sub": "a\u2028b"},
    "zero-ttl": {"ttl": 0},
    "negative-window": {"window": -60},
}


@pytest.mark.parametrize("case", REFUSED.values(), ids=list(REFUSED))
def test_what_the_python_signer_refuses_is_refused(pg: PgCluster, case: dict[str, Any]) -> None:
    args = {"source": "photos", "key": "a.jpg", **case}
    result = pg.psql(with_key("k1", KEY_SECRET, "", sign_call(**args)), check=False)
    assert result.returncode != 0
    assert "imgproxy" in result.stderr
    assert KEY_SECRET not in result.stderr


def test_null_params_sign_as_none(pg: PgCluster) -> None:
    script = with_key("k1", KEY_SECRET, "", """
        SELECT extract(epoch FROM now());
        SELECT imgproxy.sign_url('photos', 'a.jpg', NULL);""")
    now, url = pg.rows(script)
    assert url == UrlSigner(KEY_SECRET, "k1").sign("photos", "a.jpg", now=float(now))


def test_a_params_array_is_refused(pg: PgCluster) -> None:
    result = pg.psql(with_key("k1", KEY_SECRET, "", "SELECT imgproxy.sign_url('photos', 'a.jpg', '[]');"),
                     check=False)
    assert "params must be a JSON object" in result.stderr


# --- who may do what --------------------------------------------------------------------------------


def test_the_signer_role_can_sign_but_not_read_the_keys(pg: PgCluster) -> None:
    signs = pg.psql(with_key("k1", KEY_SECRET, "", sign_call("photos", "a.jpg")), check=False)
    reads = pg.psql(with_key("k1", KEY_SECRET, "", "SELECT secret FROM imgproxy.signing_keys;"), check=False)
    assert signs.returncode == 0, signs.stderr
    assert "/img/photos/a.jpg?exp=" in signs.stdout
    assert "permission denied for table signing_keys" in reads.stderr
    assert KEY_SECRET not in reads.stdout + reads.stderr


def test_a_role_without_the_grant_cannot_sign(pg: PgCluster) -> None:
    script = with_key("k1", KEY_SECRET, "", sign_call("photos", "a.jpg"), role="outsider")
    result = pg.psql(script, check=False)
    assert "permission denied for function sign_url" in result.stderr


@pytest.mark.parametrize("call", ["imgproxy.signed_url('s', 'k1', '', 'photos', 'a.jpg', '{}', 1, 1, NULL)",
                                  "imgproxy.stamps(1, 1, 0, false)", "imgproxy.percent_encode('a', false)"],
                         ids=["signed_url", "stamps", "percent_encode"])
def test_the_signer_role_calls_nothing_but_sign_url(pg: PgCluster, call: str) -> None:
    result = pg.psql(with_key("k1", KEY_SECRET, "", f"SELECT {call};"), check=False)
    assert "permission denied for function" in result.stderr


CAPTURE: Final = """
    SET LOCAL search_path = caller, pg_catalog;
    CREATE TABLE caller.captured (what text);
    CREATE FUNCTION caller.hmac(data bytea, key bytea, type text) RETURNS bytea LANGUAGE sql
      AS $$ INSERT INTO caller.captured VALUES (pg_catalog.encode(key, 'escape')) RETURNING data $$;
    CREATE FUNCTION caller.convert_to(t text, e name) RETURNS bytea LANGUAGE sql
      AS $$ INSERT INTO caller.captured VALUES (t) RETURNING pg_catalog.convert_to(t, e) $$;
    CREATE FUNCTION caller.encode(b bytea, f text) RETURNS text LANGUAGE sql
      AS $$ INSERT INTO caller.captured VALUES (pg_catalog.encode(b, 'escape'))
            RETURNING pg_catalog.encode(b, f) $$;
    CREATE FUNCTION caller.rtrim(t text, c text) RETURNS text LANGUAGE sql
      AS $$ INSERT INTO caller.captured VALUES (t) RETURNING pg_catalog.rtrim(t, c) $$;
    CREATE FUNCTION caller.now() RETURNS timestamptz LANGUAGE sql
      AS $$ INSERT INTO caller.captured VALUES ('now') RETURNING pg_catalog.now() + interval '10 years' $$;
    CREATE FUNCTION caller.cat(a text, b text) RETURNS text LANGUAGE sql
      AS $$ INSERT INTO caller.captured VALUES (pg_catalog.textcat(a, b))
            RETURNING pg_catalog.textcat(a, b) $$;
    CREATE OPERATOR caller.|| (LEFTARG = text, RIGHTARG = text, FUNCTION = caller.cat);
"""


def test_a_shadowing_function_on_the_callers_search_path_captures_nothing(pg: PgCluster) -> None:
    """The caller's own schema first on its search_path, holding functions named as those the
    signer uses (hmac as pgcrypto's, convert_to, encode, rtrim, now) and a text || text operator
    that record their arguments: inside sign_url none of them runs, and the URL is the right one."""
    script = with_key("k1", KEY_SECRET, "", f"""
        {CAPTURE}
        SELECT extract(epoch FROM pg_catalog.now());
        {sign_call("photos", "employees/Zoë Smith+1.jpg", {"w": 300}, sub="ada@example.com")}
        SELECT pg_catalog.count(*) FROM caller.captured;
        -- the trap works: called by name on this path, the caller's functions run
        SELECT caller.hmac('\\x00', pg_catalog.convert_to('trap', 'UTF8'), 'sha256') IS NOT NULL;
        SELECT rtrim('x', 'y');
        SELECT 'a'::text || 'b'::text;
        SELECT pg_catalog.count(*) FROM caller.captured;""")
    now, url, captured_by_sign_url, _, _, _, captured_by_trap = pg.rows(script)
    assert captured_by_sign_url == "0"
    assert captured_by_trap == "3"
    assert url == UrlSigner(KEY_SECRET, "k1").sign("photos", "employees/Zoë Smith+1.jpg", params={"w": "300"},
                                                   now=float(now), sub="ada@example.com")


def test_reinstalling_keeps_the_keys_and_the_grants(pg: PgCluster) -> None:
    pg.psql(f"INSERT INTO imgproxy.signing_keys VALUES ('keep', {lit(KEY_SECRET)}, '');")
    try:
        pg.psql(sql_script("postgres"))
        assert pg.rows("SELECT kid FROM imgproxy.signing_keys;") == ["keep"]
        privileges = pg.rows(f"SELECT has_function_privilege('{SIGNER_ROLE}', '{SIGN_URL}', 'EXECUTE'),"
                             f" has_function_privilege('outsider', '{SIGN_URL}', 'EXECUTE'),"
                             f" has_table_privilege('{SIGNER_ROLE}', 'imgproxy.signing_keys', 'SELECT');")
        assert privileges == ["t|f|f"]
    finally:
        pg.psql("DELETE FROM imgproxy.signing_keys;")


# --- scale ------------------------------------------------------------------------------------------


def test_ten_thousand_rows_share_one_exp(pg: PgCluster) -> None:
    script = with_key("k1", KEY_SECRET, "https://img.example.com", """
        SELECT extract(epoch FROM now());
        SELECT pg_catalog.count(*),
               pg_catalog.count(DISTINCT pg_catalog.split_part(pg_catalog.split_part(u, 'exp=', 2), '&', 1)),
               pg_catalog.min(u) FILTER (WHERE u LIKE '%/k/1234.jpg?%')
        FROM (SELECT imgproxy.sign_url('photos', 'k/' || i || '.jpg', '{"w": 96}', 3600, 60) AS u
              FROM pg_catalog.generate_series(1, 10000) AS i) AS signed;""")
    now, summary = pg.rows(script)
    count, distinct_exp, sample = summary.split("|")
    assert (count, distinct_exp) == ("10000", "1")
    assert sample == UrlSigner(KEY_SECRET, "k1", "https://img.example.com").sign(
        "photos", "k/1234.jpg", params={"w": "96"}, now=float(now), window=60)


# --- end to end ---------------------------------------------------------------------------------------

TRICKY_KEYS: Final = ("team/ada lovelace+1.png", "Zoë/社員 😀.png", "100%25 done=yes&no?.png",
                      "a/b/c/d/e/f/g/h/deep.png", "q#1 (copy).png")


def test_urls_signed_in_the_database_are_served(pg: PgCluster, tmp_path: Path, moto_endpoint: str,
                                                bucket: str, s3: Any) -> None:
    """Each tricky key signed three ways (expiring, with a sub, durable) through imgproxy serve,
    whose key k1 may sign durable URLs."""
    for key in TRICKY_KEYS:
        s3.put_object(Bucket=bucket, Key=key, Body=PHOTO, ContentType="image/png")
    data = config_data(moto_endpoint, bucket)
    data["auth"]["keys"] = {"k1": {"secret": SIGNING_KEY, "durable": True}}
    server = launch_server(tmp_path / "serve", data)
    try:
        calls = "".join(sign_call("photos", key, ttl=300, window=60)
                        + sign_call("photos", key, sub="ada@example.com")
                        + sign_call("photos", key, durable=True, window=3600) for key in TRICKY_KEYS)
        urls = pg.rows(with_key("k1", SIGNING_KEY, server.base_url + "/", calls))
        assert len(urls) == 3 * len(TRICKY_KEYS)
        assert sum("exp=" not in url for url in urls) == len(TRICKY_KEYS)
        for url in urls:
            reply = http_get(url)
            assert (url, reply.status, reply.body) == (url, 200, PHOTO)
    finally:
        server.process.kill()
