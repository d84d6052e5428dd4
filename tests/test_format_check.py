"""lib.checks.format_check: what counts as a step that parses."""
from lib.checks import format_check


def test_parses_thought_action_input():
    good = '\nThought: look it up\nAction: get_weather_for_meteo\nAction Input: {"city": "Paris"}'
    assert format_check.parses(good)
    assert not format_check.parses("Thought: hmm\nAction: get_weather_for_meteo")
    assert not format_check.parses('Thought: t\nAction: f\nAction Input: {"a": ')
    assert not format_check.parses('Thought: t\nAction: f\nAction Input: [1, 2]')
    assert not format_check.parses("Thought: Thought: Thought: the the the")
