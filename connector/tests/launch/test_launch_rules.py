"""The launch-contract rules (`epd_connector.launch.rules`) and the launcher, over the shared
bad-input tables (connector/tests/rule_tables.py): the launcher refuses at pod start what the
operator refuses at admission, with the same words."""

from __future__ import annotations

import pytest

from connector.tests import rule_tables as t
from connector.tests.launch.launch_samples import POD, config
from epd_connector.launch import rules
from epd_connector.launch.argv import build_argv, build_env
from epd_connector.launch.config import LaunchConfig, LaunchConfigError
from epd_connector.launch.vllm_flags import VLLM_SERVE_OPTIONS


@pytest.mark.parametrize(
    ("rid", "args", "index", "expect"), t.OWNED_FLAG_ROWS, ids=[r[0] for r in t.OWNED_FLAG_ROWS]
)
def test_owned_flags_are_refused_by_the_rule_and_the_launcher(
    rid: str, args: list[str], index: int, expect: str
) -> None:
    problem = rules.check_extra_args(args)
    assert problem is not None
    assert (problem.index, expect in problem.message) == (index, True), problem
    cfg = config("E/P/D", roles={"decode": {"extra_args": args}})
    with pytest.raises(LaunchConfigError) as err:
        build_argv(cfg, "decode", POD)
    assert f"roles.decode.extra_args[{index}]: " in str(err.value)
    assert expect in str(err.value)


@pytest.mark.parametrize(("rid", "args"), t.ACCEPTED_FLAG_ROWS)
def test_flags_vllm_reads_as_ours_to_give_are_kept(rid: str, args: list[str]) -> None:
    assert rules.check_extra_args(args) is None
    cfg = config(roles={"decode": {"extra_args": args}})
    assert build_argv(cfg, "decode", POD)[-len(args) :] == args


@pytest.mark.parametrize(
    ("arg", "option"),
    [
        ("--tensor-parallel", "--tensor-parallel-size"),
        ("--tensor_parallel_size", "--tensor-parallel-size"),
        ("-tp", "--tensor-parallel-size"),
        ("-tp=4", "--tensor-parallel-size"),
        ("--ec-transfer-config.ec_role", "--ec-transfer-config"),
        ("--no-enable-chunked-prefill", "--enable-chunked-prefill"),
        ("-1", None),
        ("value", None),
        ("--no-such-option", ""),
    ],
)
def test_resolve_flag(arg: str, option: str | None) -> None:
    assert rules.resolve_flag(arg).option == option


def test_an_ambiguous_abbreviation_names_the_candidates() -> None:
    options = {"--alpha-one": "--alpha-one", "--alpha-two": "--alpha-two"}
    got = rules.resolve_flag("--alpha", options)
    assert got.candidates == ("--alpha-one", "--alpha-two")
    problem = rules.check_extra_args(["--alpha"], options, owned={})
    assert problem is not None
    assert "ambiguous abbreviation" in problem.message


def test_every_owned_flag_is_a_vllm_option() -> None:
    canonical = set(VLLM_SERVE_OPTIONS.values())
    assert set(rules.OWNED_FLAGS) <= canonical, set(rules.OWNED_FLAGS) - canonical


def test_every_flag_the_launcher_renders_is_owned() -> None:
    for name, cfg in {"e-pd": config(), "e-p-d": config("E/P/D")}.items():
        for role in cfg.present_roles():
            for arg in build_argv(cfg, role, POD)[3:]:
                got = rules.resolve_flag(arg)
                assert got.option is None or got.option in rules.OWNED_FLAGS, (name, arg)


def _with_model(**model: str) -> LaunchConfig:
    return config(model={"name": "m", **model})


@pytest.mark.parametrize(("rid", "text"), t.CONTROL_TEXT_ROWS)
def test_control_characters_never_reach_the_argv(rid: str, text: str) -> None:
    assert rules.control_char(text) is not None
    for field in ("served_model_name", "revision", "tokenizer"):
        with pytest.raises(LaunchConfigError) as err:
            build_argv(_with_model(**{field: text}), "decode", POD)
        assert "control character" in str(err.value)


def test_env_values_allow_tabs_and_newlines_not_nul() -> None:
    assert rules.control_char("a\tb\nc", env_value=True) is None
    assert rules.control_char("a\x00b", env_value=True) == repr("\x00")
    assert build_env(config(), "decode", POD)["VLLM_HOST_IP"] == POD.ip


@pytest.mark.parametrize(
    ("rid", "connector", "key", "value", "expect"),
    t.KV_EXTRA_ROWS,
    ids=[r[0] for r in t.KV_EXTRA_ROWS],
)
def test_kv_extra_keys_vllm_does_not_read_are_refused(
    rid: str, connector: str, key: str, value: object, expect: str
) -> None:
    cfg = config("E/P/D", kv={"connector": connector, "extra_config": {key: value}})
    with pytest.raises(LaunchConfigError) as err:
        build_argv(cfg, "prefill", POD)
    assert f"kv.extra_config.{key}" in str(err.value)


@pytest.mark.parametrize(
    ("fn", "args", "want"),
    [
        (rules.ec_port_block, (14579, 2, 4), (14579, 14586)),
        (rules.ec_port_block, (65535, 1, 1), (65535, 65535)),
        (rules.nixl_port_block, (5600, 3), (5600, 5602)),
        (rules.overlaps, ((1, 3), (3, 5)), True),
        (rules.overlaps, ((1, 3), (4, 5)), False),
        (rules.ec_consumer_of, (True,), "prefill"),
        (rules.ec_consumer_of, (False,), "decode"),
    ],
)
def test_rule_functions(fn: object, args: tuple[object, ...], want: object) -> None:
    assert callable(fn)
    assert fn(*args) == want


def test_defaults_are_vllms() -> None:
    cfg = config("E/P/D")
    assert cfg.ec.port == rules.DEFAULT_EC_PORT == 14579
    assert cfg.role("decode").port == rules.ENGINE_HTTP_PORT
