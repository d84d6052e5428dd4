"""The project's own ToolBench-format sample corpus, generated from a seed (the offline default).

A small world in ToolBench's formats (docs/formats.md): tools with API documentation, training
records, test queries for the six groups split as ToolBench splits them, and the responses the
offline tool environment serves (docs/stages.md, "The sample data"). Every value is synthetic.
"""
from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path

from lib.common import resume
from lib.toolbench import formats, sample_world
from lib.toolbench.apis import canonical_arguments
from lib.toolbench.observations import observation, recorded_observation

# Invented values are made of these, so a model cannot guess a value: it must copy it from the query.
SYLLABLES = ["ka", "lo", "mi", "ra", "ven", "tor", "sa", "bel", "din", "ko", "ru", "na", "tel", "mar",
             "vi", "zo", "len", "dra", "pe", "sun", "gor", "li", "fa", "mun", "tes", "bra", "ok", "ul"]


def invent_value(like, rng: random.Random):
    """A value of the same shape as `like` that no list above holds: a number of the same size,
    letters-only words made of syllables, upper-case codes and digit runs of the same length."""
    if isinstance(like, bool) or not isinstance(like, (int, float, str)):
        return like
    if isinstance(like, (int, float)):
        return rng.randint(2, max(10, 4 * int(like)))

    def word(match):
        text = match.group(0)
        if text.isdigit():
            return "".join(rng.choice("0123456789") for _ in text)
        if text.isupper():
            return "".join(rng.choice("ABCDEFGHIJKLMNOPRSTUVWZ") for _ in text)
        made = "".join(rng.choice(SYLLABLES) for _ in range(rng.choice([2, 2, 3])))
        return made.capitalize() if text[0].isupper() else made
    return re.sub(r"[A-Za-z]+|[0-9]+", word, like)


UNSEEN_CATEGORIES = ("Music", "Communication")
UNSEEN_TOOLS = ("AirQualityHub", "CryptoTicker", "StreamFinder")   # categories seen, tools not
FAILURE_RATE = 0.12          # training trajectories where an API fails and the model gives up
G3_SHARE = 0.5               # ToolBench's G3 has half as many test queries as each other group


class _Api:
    def __init__(self, category, tool, tool_description, spec):
        (self.name, self.description, self.required, self.optional, self.values, self.phrasings,
         self._respond, self._summarise) = spec
        self.category, self.tool, self.tool_description = category, tool, tool_description
        self.function = formats.api_function_name(self.name, tool)

    def api_entry(self) -> dict:
        return {"category_name": self.category, "tool_name": self.tool, "api_name": self.name,
                "api_description": self.description, "required_parameters": self.required,
                "optional_parameters": self.optional, "method": "GET"}

    def draw_arguments(self, rng: random.Random, unseen_values: bool, invented: bool = False) -> dict:
        args = {}
        for key, pool in self.values.items():
            if key == "city" and unseen_values:
                pool = sample_world.NEW_CITIES
            value = rng.choice(pool)
            if invented:
                value = (tuple(invent_value(v, rng) for v in value) if isinstance(value, tuple)
                         else invent_value(value, rng))
            if "," in key:
                args.update(zip(key.split(","), value))
            else:
                args[key] = value
        return args

    def response(self, args: dict) -> dict:
        # Seeded by the call itself, so the same call always gets the same response.
        digest = hashlib.sha256(f"{self.function}|{json.dumps(args, sort_keys=True)}".encode()).hexdigest()
        return self._respond(args, random.Random(int(digest[:16], 16)))

    def summarise(self, response: dict) -> str:
        return self._summarise(None, response)


def _apis(world) -> list[_Api]:
    return [_Api(category, tool, description, spec)
            for category, tools in world.items() for tool, (description, specs) in tools.items()
            for spec in specs]


def _query(rng, tools: list[list[_Api]], unseen_values: bool, invented: bool = False):
    """A query over some of the given tools' APIs: (api_list, calls [(api, args)], text)."""
    calls, sentences = [], []
    for apis in tools:
        chosen = rng.sample(apis, k=min(len(apis), rng.choice([1, 1, 2])))
        for api in chosen:
            args = api.draw_arguments(rng, unseen_values, invented)
            calls.append((api, args))
            sentences.append(rng.choice(api.phrasings).format(**args))
    openers = ["", "I'm planning my week. ", "Quick question. ", "I need some help. ", "For a project, "]
    joiners = [" Also, ", " Additionally, ", " And ", " "]
    def join(before: str, sentence: str) -> str:
        lower = before.endswith((", ", "And ", "Also, ", "Additionally, ")) or before.endswith(" And ")
        return before + (sentence[0].lower() + sentence[1:] if lower else sentence)

    text = join(rng.choice(openers), sentences[0])
    for sentence in sentences[1:]:
        text = join(text + rng.choice(joiners), sentence)
    api_list = [api.api_entry() for apis in tools for api in apis]
    return api_list, calls, text


def _wrong_arguments(args: dict, rng: random.Random, required: list[str]) -> dict:
    """The arguments as a model that miscopies writes them: one value replaced by an invented one,
    or (half the time, when the call has two or more values) one required value left out."""
    if len(args) > 1 and any(k in args for k in required) and rng.random() < 0.5:
        left_out = rng.choice(sorted(k for k in args if k in required))
        return {k: v for k, v in args.items() if k != left_out}
    key = rng.choice(sorted(k for k, v in args.items() if isinstance(v, str)) or sorted(args))
    wrong = dict(args)
    while wrong[key] == args[key]:
        wrong[key] = invent_value(args[key], rng)
    return wrong


# Seven parameters: the query, its calls and where the conversation fails or retries: generate()'s draws.
def _conversation(query_text: str, api_list: list, calls, fail_at: int | None, tool_docs: dict,
                  retry_at: int | None = None, rng: random.Random | None = None) -> list[dict]:
    """The full conversation (ToolBench from/value turns) of one solved or abandoned query. At call
    `retry_at` the first try has a miscopied or missing value, gets the offline tool environment's
    error for an unrecorded call, and the next step makes the call again with the query's values."""
    query = {"query": query_text, "query_id": 0, "api_list": api_list}
    tools = formats.tool_descriptions_for_query(query, tool_docs)
    turns = [{"from": "system", "value": formats.system_prompt(formats.functions_for_query(query), tools)},
             {"from": "user", "value": formats.user_message(query_text)}]
    facts = []
    for k, (api, args) in enumerate(calls):
        purpose = api.description[0].lower() + api.description[1:].rstrip(".")
        thought = (f"The user wants the {purpose}. I will call {api.function}." if k == 0
                   else f"Next I need the {purpose}, so I will call {api.function}.")
        if k == retry_at:
            wrong = _wrong_arguments(args, rng, [p["name"] for p in api.required])
            turns.append({"from": "assistant", "value": formats.format_step(thought, api.function,
                                                                            json.dumps(wrong, indent=2))})
            turns.append({"from": "function", "value": observation(error=(
                f"No recorded response for API '{api.name}' of tool '{api.tool}' with arguments "
                f"{canonical_arguments(wrong)} (offline tool environment)"))})
            thought = (f"The call to {api.function} failed: its arguments must be the values the user "
                       f"gave, each required one. I will call {api.function} again with them.")
        turns.append({"from": "assistant", "value": formats.format_step(thought, api.function,
                                                                        json.dumps(args, indent=2))})
        if k == fail_at:
            turns.append({"from": "function", "value": json.dumps(
                {"error": "Rate limit error...", "response": ""})})
            finish = {"return_type": "give_up_and_restart"}
            turns.append({"from": "assistant", "value": formats.format_step(
                f"The call to {api.function} failed, so I cannot finish the task. I will give up and restart.",
                "Finish", json.dumps(finish, indent=2))})
            return turns
        response = api.response(args)
        turns.append({"from": "function", "value": recorded_observation(response)})
        facts.append(api.summarise(response))
    answer = " ".join(f[0].upper() + f[1:] + ("" if f.endswith(("?", ".")) else ".") for f in facts)
    finish = {"return_type": "give_answer", "final_answer": answer}
    turns.append({"from": "assistant", "value": formats.format_step(
        "I have all the information the user asked for, so I can give the final answer.", "Finish",
        json.dumps(finish, indent=2))})
    return turns


def _records(query_text: str, turns: list[dict]) -> list[dict]:
    """One training record per assistant step, as ToolBench's preprocessing makes them."""
    return [{"id": f"Step {i}: {query_text}", "conversations": turns[:i + 1]}
            for i, turn in enumerate(turns) if turn["from"] == "assistant"]


def _tool_groups(apis: list[_Api]) -> dict:
    by_tool: dict[tuple, list[_Api]] = {}
    for api in apis:
        by_tool.setdefault((api.category, api.tool), []).append(api)
    return by_tool


def fingerprint(seed: int, train_queries: int = 240, queries_per_group: int = 8,
                invented_values: float = 0.0, retry_share: float = 0.0) -> str:
    """Identifies what generate() would write: its code (this file, the world, the prompt format)
    and arguments."""
    return resume.fingerprint({"code": resume.file_digest(__file__, sample_world.__file__, formats.__file__),
                               "options": [seed, train_queries, queries_per_group, invented_values, retry_share]})


def is_current(out_dir: Path, seed: int, **options) -> bool:
    manifest = Path(out_dir) / "MANIFEST.json"
    return manifest.exists() and json.loads(manifest.read_text()).get("fingerprint") == fingerprint(
        seed, **options)


# Long: one seeded stream draws training, then test queries; in one piece, the draw order stays plain.
def generate(out_dir: Path, seed: int = 0, train_queries: int = 240, queries_per_group: int = 8,
             invented_values: float = 0.0, retry_share: float = 0.0) -> dict:
    """Write the sample corpus under out_dir; returns its manifest (also written as MANIFEST.json).

    invented_values: the share of training queries whose argument values are invented (never in a
    test query), so that a model learns to copy values from the query rather than guess them from
    the few it has seen. retry_share: the share of training conversations in which one call first
    has a miscopied value and is made again after the error (ToolBench's training data, too, has
    failed calls that the model recovers from)."""
    rng = random.Random(seed)
    out_dir = Path(out_dir)
    apis = _apis(sample_world.world())
    by_tool = _tool_groups(apis)
    seen = {k: v for k, v in by_tool.items() if k[0] not in UNSEEN_CATEGORIES and k[1] not in UNSEEN_TOOLS}
    unseen_tool = {k: v for k, v in by_tool.items() if k[1] in UNSEEN_TOOLS}
    unseen_cat = {k: v for k, v in by_tool.items() if k[0] in UNSEEN_CATEGORIES}

    def same_category(pool: dict, k: int) -> list[list[_Api]]:
        categories = sorted({c for c, _ in pool if sum(c == c2 for c2, _ in pool) >= 2})
        category = rng.choice(categories)
        tools = sorted(t for t in pool if t[0] == category)
        return [pool[t] for t in rng.sample(tools, k=min(k, len(tools)))]

    def across_categories(pool: dict, k: int) -> list[list[_Api]]:
        categories = rng.sample(sorted({c for c, _ in pool}), k=k)
        return [pool[rng.choice(sorted(t for t in pool if t[0] == c))] for c in categories]

    def single(pool: dict) -> list[list[_Api]]:
        return [pool[rng.choice(sorted(pool))]]

    responses: dict[tuple, dict] = {}

    def record_responses(calls):
        for api, args in calls:
            key = (api.tool, api.name, json.dumps(args, sort_keys=True))
            responses[key] = {"category": api.category, "tool_name": api.tool, "api_name": api.name,
                              "arguments": args, "response": api.response(args)}

    # The task description lists each tool with its description, as the tool documentation has it.
    tool_docs = {formats.standardize_name(api.tool): api.tool_description for api in apis}

    # Training: G1/G2/G3-style queries over the seen tools only.
    records, train_texts = [], []
    # Retries draw from their own stream: the queries, and so the test split, are the same whatever
    # retry_share is.
    retry_rng = random.Random(f"retry-{seed}")
    shapes = [lambda: single(seen), lambda: same_category(seen, 2), lambda: across_categories(seen, 2)]
    for _ in range(train_queries):
        # (No draw for a share of 0, so the corpus without these options stays as it was.)
        api_list, calls, text = _query(rng, rng.choice(shapes)(), unseen_values=False,
                                       invented=bool(invented_values) and rng.random() < invented_values)
        fail_at = rng.randrange(len(calls)) if rng.random() < FAILURE_RATE else None
        retry_at = retry_rng.randrange(len(calls)) if retry_share and retry_rng.random() < retry_share else None
        if fail_at is not None and retry_at is not None and retry_at >= fail_at:
            retry_at = None
        records += _records(text, _conversation(text, api_list, calls, fail_at, tool_docs, retry_at, retry_rng))
        train_texts.append(text)
        record_responses(calls)

    # Test: the six groups, split the way ToolBench splits them.
    plans = {
        "G1_instruction": lambda: single(seen),
        "G1_category": lambda: single(unseen_cat),
        "G1_tool": lambda: single(unseen_tool),
        "G2_instruction": lambda: same_category(seen, 2),
        "G2_category": lambda: same_category(unseen_cat, 2),
        "G3_instruction": lambda: across_categories(seen, 3),
    }
    tests, query_id = {}, 1
    for group, plan in plans.items():
        count = max(1, round(queries_per_group * (G3_SHARE if group.startswith("G3") else 1)))
        tests[group] = []
        while len(tests[group]) < count:
            api_list, calls, text = _query(rng, plan(), unseen_values=rng.random() < 0.5)
            if text in train_texts:
                continue
            relevant = [[api.tool, api.name] for api, _ in calls]
            tests[group].append({"api_list": api_list, "query": text, "relevant APIs": relevant,
                                 "query_id": query_id})
            query_id += 1
            record_responses(calls)

    lines = _write_corpus(out_dir, records, tests, by_tool, responses)
    manifest = {"fingerprint": fingerprint(seed, train_queries, queries_per_group, invented_values, retry_share),
                "seed": seed, "train_queries": train_queries, "invented_values": invented_values,
                "retry_share": retry_share, "train_records": len(records),
                "test_queries": {g: len(q) for g, q in tests.items()}, "tools": len(by_tool),
                "apis": len(apis), "categories": len({a.category for a in apis}),
                "recorded_responses": len(lines), "unseen_categories": list(UNSEEN_CATEGORIES),
                "unseen_tools": list(UNSEEN_TOOLS),
                "note": "synthetic ToolBench-format sample made by lib/toolbench/sample.py; not ToolBench data"}
    _write_json(out_dir / "MANIFEST.json", manifest)
    return manifest


def _write_corpus(out_dir: Path, records: list, tests: dict, by_tool: dict, responses: dict) -> list[str]:
    """The corpus's files as ToolBench lays them out: training records, test queries, tool documents
    and the recorded responses (returned, one JSON line each)."""
    _write_json(out_dir / "train" / "toolllama_G123_dfs_train.json", records)
    for group, queries in tests.items():
        _write_json(out_dir / "test_instruction" / f"{group}.json", queries)
    for (category, tool), tool_apis in by_tool.items():
        _write_json(out_dir / "toolenv" / "tools" / category / f"{tool}.json", {
            "tool_name": tool, "standardized_name": formats.standardize_name(tool),
            "title": tool, "tool_description": tool_apis[0].tool_description, "home_url": "",
            "host": f"{formats.standardize_name(tool)}.example.invalid",
            "api_list": [{"name": a.name, "url": f"https://{formats.standardize_name(tool)}.example.invalid/"
                          f"{formats.standardize_name(a.name)}", "description": a.description, "method": "GET",
                          "required_parameters": a.required, "optional_parameters": a.optional}
                         for a in tool_apis]})
    # Each response keeps its own key order: its repr must read as in the training conversations.
    lines = [json.dumps(r) for _, r in sorted(responses.items())]
    (out_dir / "toolenv" / "responses.jsonl").write_text("\n".join(lines) + "\n")
    return lines


def _write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=1, ensure_ascii=False) + "\n")
