"""transform/presets.py and ``[transform.presets.NAME]``: definitions checked as a URL's params
would be (errors naming ``transform.presets.NAME.KEY``), ``preset=NAME`` expanded before the
spec is built, and ``presets_only`` on keys and tokens."""

from __future__ import annotations

from typing import Any

import pytest

from imgproxy.auth.presets import check_presets_only
from imgproxy.config import ConfigError, Secret, TokenConfig, parse_config
from imgproxy.errors import InvalidParameter, ParamsNotAllowed
from imgproxy.transform.params import OutputFormat
from imgproxy.transform.policy import TransformPolicy

KEY = "presets-test-signing-key-0123456789abcdef012"
TOKEN = "presets-test-bearer-token-0123456789abcdef0"
EVERY = frozenset(OutputFormat)
NO_AVIF = frozenset({OutputFormat.JPEG, OutputFormat.PNG, OutputFormat.WEBP})
THUMB = {"w": 96, "h": 96, "fit": "cover", "fmt": "auto", "allow_override": ["dpr"]}


def data(presets: dict[str, Any], **auth: Any) -> dict[str, Any]:
    return {"auth": {"keys": {"k1": KEY}, **auth}, "sources": {"photos": {"bucket": "acme-photos"}},
            "transform": {"presets": presets}}


def policy(presets: dict[str, Any], formats: frozenset[OutputFormat] = EVERY) -> TransformPolicy:
    return TransformPolicy.from_config(parse_config(data(presets), environ={}).transform, formats)


# --- definitions --------------------------------------------------------------------------------

def test_a_preset_is_kept_as_a_url_spells_its_params() -> None:
    config = parse_config(data({"thumb": {**THUMB, "dpr": 1.5, "bg": "ffffff"}}), environ={})
    preset = config.transform.presets["thumb"]
    assert dict(preset.params) == {"w": "96", "h": "96", "fit": "cover", "fmt": "auto", "dpr": "1.5",
                                   "bg": "ffffff"}
    assert preset.allow_override == ("dpr",)


@pytest.mark.parametrize(("table", "where"), [
    ({"w": 0}, "transform.presets.p.w: Parameter 'w' must be a whole number"),
    ({"w": 96, "width": 96}, "transform.presets.p.width: not a transform parameter"),
    ({"w": 96, "preset": "x"}, "transform.presets.p.preset: not a transform parameter"),
    ({"w": 96, "sig": "x"}, "transform.presets.p.sig: not a transform parameter"),
    ({"w": 96, "gravity": "north"}, "transform.presets.p.gravity: Parameter 'gravity' only applies"),
    ({"w": 96, "fmt": "gif"}, "transform.presets.p.fmt: Parameter 'fmt' is not a known format"),
    ({"w": 5000}, "transform.presets.p.w: Parameter 'w' times dpr must be at most 4096"),
    ({"w": 96, "dpr": 9}, "transform.presets.p.dpr:"),
    ({"w": 96, "allow_override": ["width"]}, "transform.presets.p.allow_override: 'width'"),
])
def test_a_bad_preset_is_a_config_error_naming_its_key(table: dict[str, Any], where: str) -> None:
    with pytest.raises(ConfigError, match="^" + where.replace(".", r"\.").replace("(", r"\(")):
        policy({"p": table})


def test_a_preset_this_build_cannot_encode_is_a_config_error() -> None:
    assert policy({"p": {"w": 96, "fmt": "avif"}}).presets["p"].params["fmt"] == "avif"
    with pytest.raises(ConfigError, match=r"^transform\.presets\.p\.fmt: .*not supported by this server"):
        policy({"p": {"w": 96, "fmt": "avif"}}, NO_AVIF)


@pytest.mark.parametrize(("presets", "message"), [
    ({"a b": {"w": 96}}, "transform.presets.a b: preset names use letters"),
    ({"x" * 65: {"w": 96}}, "preset names use letters"),
    ({"p": {}}, "transform.presets.p: a preset sets at least one"),
    ({"p": {"w": True}}, "transform.presets.p.w: expected a string or a number"),
    ({"p": {"w": [96]}}, "transform.presets.p.w: expected a string or a number"),
    ({"p": {"w": 96, "allow_override": "dpr"}}, "transform.presets.p.allow_override: expected a list"),
    ({"p": "w=96"}, "transform.presets.p: expected a table"),
])
def test_a_malformed_preset_table_is_refused_when_the_config_loads(presets: dict[str, Any],
                                                                   message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(data(presets), environ={})


# --- preset=NAME ----------------------------------------------------------------------------------

def test_a_preset_parses_to_the_spec_of_its_definition() -> None:
    presets = policy({"thumb": THUMB})
    assert presets.parse({"preset": "thumb"}) == presets.parse({"w": "96", "h": "96", "fit": "cover",
                                                               "fmt": "auto"})


def test_an_allowed_override_replaces_or_adds_to_the_definition() -> None:
    presets = policy({"thumb": {**THUMB, "allow_override": ["dpr", "w"]}})
    spec = presets.parse({"preset": "thumb", "dpr": "2", "w": "50"})
    assert spec is not None
    assert (spec.width, spec.height) == (100, 192)


def test_an_override_is_checked_with_the_definition() -> None:
    presets = policy({"thumb": THUMB})
    with pytest.raises(InvalidParameter, match="dpr"):
        presets.parse({"preset": "thumb", "dpr": "7"})


@pytest.mark.parametrize("query", [
    {"preset": "thumb", "w": "300"}, {"preset": "thumb", "q": "50"}, {"preset": "thumb", "fmt": "png"}])
def test_a_param_not_in_allow_override_is_invalid_beside_a_preset(query: dict[str, str]) -> None:
    with pytest.raises(InvalidParameter) as caught:
        policy({"thumb": THUMB}).parse(query)
    refused = next(name for name in query if name != "preset")
    assert f"'{refused}' may not be given with preset=thumb (it allows: dpr)" in caught.value.public_message


@pytest.mark.parametrize(("name", "shown"), [("huge", "Unknown preset 'huge'"),
                                             ("a\nb", "Unknown preset (known: thumb)")])
def test_an_unknown_preset_is_invalid_and_echoed_only_when_it_is_a_name(name: str, shown: str) -> None:
    with pytest.raises(InvalidParameter) as caught:
        policy({"thumb": THUMB}).parse({"preset": name})
    assert shown in caught.value.public_message


def test_signing_params_pass_beside_a_preset() -> None:
    query = {"preset": "thumb", "exp": "1", "kid": "k1", "sig": "x"}
    assert policy({"thumb": THUMB}).parse(query) is not None


# --- presets_only -------------------------------------------------------------------------------------

@pytest.mark.parametrize("query", [{}, {"preset": "thumb"}, {"preset": "thumb", "fp": "0.5,0.5"},
                                   {"initials": "AB", "preset": "t"}, {"sig": "x", "exp": "1", "kid": "k1"}])
def test_presets_only_allows_presets_the_per_image_params_and_signing(query: dict[str, str]) -> None:
    check_presets_only(query)


@pytest.mark.parametrize("query", [{"w": "96"}, {"preset": "thumb", "dpr": "2"}, {"bogus": "1"}])
def test_presets_only_refuses_every_other_param(query: dict[str, str]) -> None:
    with pytest.raises(ParamsNotAllowed):
        check_presets_only(query)


def test_presets_only_is_read_from_key_and_token_tables() -> None:
    config = parse_config(data({}, keys={"k1": KEY, "bi": {"secret": KEY + "-bi", "presets_only": True}},
                               tokens={"bi": {"token": TOKEN, "scopes": ["*"], "presets_only": True},
                                       "ops": {"token": TOKEN + "-ops", "scopes": ["*"]}}), environ={})
    assert config.auth.key_limits["bi"].presets_only
    assert not config.auth.key_limits["k1"].presets_only
    assert [t.presets_only for t in config.auth.tokens] == [True, False]
    assert TokenConfig("x", Secret("y"), ()).presets_only is False


@pytest.mark.parametrize("auth", [{"keys": {"k1": {"secret": KEY, "presets_only": "yes"}}},
                                  {"tokens": {"bi": {"token": TOKEN, "scopes": ["*"], "presets_only": 1}}}])
def test_presets_only_must_be_true_or_false(auth: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=r"presets_only: expected true or false"):
        parse_config(data({}, **auth), environ={})
