"""The contamination check and the split check: were the test queries, or their tools, trained on?

Contamination: exact and near-duplicate (word n-gram Jaccard) matches of normalised test queries
against training queries. The split check: per group, the test queries that use a tool or a
category the training prompts list (ToolBench's split wants none in G1-tool, G1-category and
G2-category).
"""
from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

from lib.common import config
from lib.common.settings import Profile
from lib.toolbench import apis, formats, records
from lib.common.tables import group_label, markdown_table

GROUPS = config.GROUPS


# ----------------------------------------------------------------------------- queries
def _user_query(value: str) -> str:
    return re.sub(r"\s*Begin!\s*$", "", value.strip()).strip()


def training_queries(cfg: Profile) -> tuple[list[tuple[str, str, frozenset]], str]:
    """(record id, user query, tools its functions belong to) of every training record, and where
    they came from.

    From data.train_path (a JSON list or JSONL of ToolBench records, or a folder of raw answer
    files), else from outputs/<profile>/sft/ (role=user prompt messages)."""
    train = config.path(cfg, cfg.data.train_path)
    sft = config.path(cfg, cfg.output_dir) / "sft"
    if train is not None and train.exists():
        return list(_file_queries(train, cfg.data.answer_methods)), str(train)
    if sft.exists():
        return list(_sft_queries(sft)), str(sft)
    return [], "not available"


def _file_queries(path: Path, answer_methods=None):
    """User queries of a training file or answer folder, read as stage 01 reads them (streamed)."""
    for _, where, record, _ in records.iter_records(path, answer_methods):
        turns = (record.get("conversations") or []) if isinstance(record, dict) else []
        user = next((t["value"] for t in turns if t.get("from") == "user"), None)
        system = next((t["value"] for t in turns if t.get("from") == "system"), "")
        if user is not None:
            yield str(record.get("id", where)), _user_query(user), _prompt_tools(system)


def _sft_queries(folder: Path):
    from datasets import load_from_disk     # heavy (pyarrow, pandas): only when no train_path is there

    ds = load_from_disk(str(folder)).select_columns(["id", "prompt"])
    for batch in ds.iter(batch_size=1000):
        for rid, prompt in zip(batch["id"], batch["prompt"]):
            user = next((m["content"] for m in prompt if m["role"] == "user"), None)
            system = next((m["content"] for m in prompt if m["role"] == "system"), "")
            if user is not None:
                yield str(rid), _user_query(user), _prompt_tools(system)


_FUNCTION_NAME = re.compile(r"\{'name': '([^']+)'")


def _prompt_tools(system: str) -> frozenset:
    """The tools of the functions a system prompt lists (ToolBench's `<api>_for_<tool>` names)."""
    return frozenset(name.rsplit("_for_", 1)[1] for name in _FUNCTION_NAME.findall(system)
                     if "_for_" in name)


def test_queries(cfg: Profile) -> dict[str, list[dict]]:
    test_dir = config.path(cfg, cfg.data.test_dir)
    found = {}
    for g in GROUPS:
        f = test_dir / f"{g}.json"
        if f.exists():
            found[g] = json.loads(f.read_text(encoding="utf-8"))
    return found


# ----------------------------------------------------------------------------- the overlap
def normalise(text: str) -> str:
    """Lowercase; punctuation and runs of whitespace become one space."""
    return " ".join(re.sub(r"[\W_]+", " ", text.lower()).split())


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    """Word n-grams of the normalised text (the whole text as one gram when shorter than n)."""
    words = text.split()
    if len(words) < n:
        return {tuple(words)} if words else set()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


class Nearest(NamedTuple):
    """A test query's closest training query so far: n-gram Jaccard, overlap, the training id."""
    jaccard: float
    overlap: float
    train_id: str


def contamination(tests: dict[str, list[dict]], train: list[tuple[str, str]], n: int,
                  threshold: float) -> tuple[list[dict], list[dict]]:
    """Exact and near-duplicate overlap of test queries with training queries.

    An inverted index maps each test n-gram to the test queries holding it; each distinct training
    query is streamed through it once, so the cost is linear in the training text, never a pairwise
    comparison of all test and training queries. Near duplicate: n-gram Jaccard >= threshold.
    Overlap: the share of a test query's n-grams found in one training query."""
    flat = [(g, q) for g, qs in tests.items() for q in qs]
    norm = [normalise(q["query"]) for _, q in flat]
    grams = [ngrams(t, n) for t in norm]
    index = defaultdict(list)
    for i, gs in enumerate(grams):
        for gram in gs:
            index[gram].append(i)
    best = [Nearest(0.0, 0.0, "") for _ in flat]
    exact_ids: dict[str, str] = {}
    seen: set[str] = set()
    test_texts = set(norm)
    for rid, query, *_ in train:
        text = normalise(query)
        if text in seen:
            continue
        seen.add(text)
        if text in test_texts:
            exact_ids.setdefault(text, rid)
        hits = defaultdict(int)
        tgrams = ngrams(text, n)
        for gram in tgrams:
            for i in index.get(gram, ()):
                hits[i] += 1
        for i, c in hits.items():
            jac = c / (len(grams[i]) + len(tgrams) - c)
            if jac > best[i].jaccard:
                best[i] = Nearest(jac, c / len(grams[i]), rid)
    return _contamination_rows(tests, flat, norm, best, exact_ids, threshold, len(seen))


# Seven parameters: the nearest-match pass's results, handed on whole by contamination_rows.
def _contamination_rows(tests, flat, norm, best, exact_ids, threshold, n_train):
    """Per group (and overall): counts and maxima; plus one row per flagged test query."""
    pairs = []
    for (g, q), text, (jac, ovl, rid) in zip(flat, norm, best):
        kind = "exact" if text in exact_ids else ("near" if jac >= threshold else "")
        if kind:
            pairs.append({"group": g, "query_id": q.get("query_id"), "kind": kind,
                          "jaccard": f"{jac:.3f}", "overlap": f"{ovl:.3f}",
                          "train_id": exact_ids.get(text, rid), "query": q["query"]})
    rows = []
    for g in list(tests) + ["overall"]:
        idx = [i for i, (gg, _) in enumerate(flat) if g in (gg, "overall")]
        mine = [p for p in pairs if g in (p["group"], "overall")]
        rows.append({"group": g, "n_test": len(idx), "n_train_queries": n_train,
                     "exact_dups": sum(p["kind"] == "exact" for p in mine),
                     "near_dups": sum(p["kind"] == "near" for p in mine),
                     "max_overlap": f"{max((best[i].overlap for i in idx), default=0):.3f}",
                     "max_jaccard": f"{max((best[i].jaccard for i in idx), default=0):.3f}"})
    return rows, pairs


CONTAMINATION_COLUMNS = ["group", "n_test", "n_train_queries", "exact_dups", "near_dups", "max_overlap",
                         "max_jaccard", "train_source"]
PAIR_COLUMNS = ["group", "query_id", "kind", "jaccard", "overlap", "train_id", "query"]


# ----------------------------------------------------------------------------- the split check
SPLIT_COLUMNS = ["group", "n_test", "seen_tool", "seen_category", "train_tools", "train_categories"]


def split_check(cfg: Profile, tests: dict[str, list[dict]], train: list[tuple]) -> list[dict]:
    """Per group: how many test queries use a tool, and how many a category, that training used.
    ToolBench's split wants 0 and 0 for G1-tool's tools and the *-category groups' categories.
    A training tool's category comes from the tool documents (data.toolenv_dir/tools/<category>/)."""
    docs = apis.load_tool_docs(config.path(cfg, cfg.data.toolenv_dir) / "tools")
    train_tools = set().union(*(t[2] for t in train)) if train else set()
    train_categories = {docs[t]["category"] for t in train_tools if t in docs}
    rows = []
    for group in [*tests, "overall"]:
        queries = [q for g, qs in tests.items() if group in (g, "overall") for q in qs]
        used = [[(formats.standardize_name(a["tool_name"]), a.get("category_name"))
                 for a in q.get("api_list") or []]
                for q in queries]
        rows.append({"group": group, "n_test": len(queries),
                     "seen_tool": sum(any(t in train_tools for t, _ in u) for u in used),
                     # Without tool documents a training tool's category is unknown: no count.
                     "seen_category": sum(any(c in train_categories for _, c in u) for u in used)
                     if docs else "",
                     "train_tools": len(train_tools), "train_categories": len(train_categories)})
    return rows


# ----------------------------------------------------------------------------- both, in Markdown
# Seven parameters: the rows, what the caption states (source, n, threshold, caption lines), the stamp.
def contamination_markdown(rows, source, n, threshold, caption, stamp, split=()) -> str:
    cap = caption + [f"Training queries from {source}; {n}-gram Jaccard >= {threshold} is a near duplicate "
                     f"(exact ones not counted again); overlap = share of a test query's {n}-grams in one "
                     "training query."]
    body = [[group_label(r["group"]), *[str(r[c]) for c in CONTAMINATION_COLUMNS[1:-1]]] for r in rows]
    text = markdown_table(["Group", "Test queries", "Distinct training queries", "Exact dups", "Near dups",
                           "Max n-gram overlap", "Max Jaccard"], body,
                          "Contamination: test queries vs training queries", cap, stamp)
    if split:
        body = [[group_label(r["group"]), *[str(r[c]) for c in SPLIT_COLUMNS[1:4]]] for r in split]
        text += "\n" + markdown_table(
            ["Group", "Test queries", "With a tool seen in training", "With a category seen in training"],
            body, "The split: tools and categories of the test queries seen in training", [
                f"Test queries using at least one tool (category) that the training prompts list: "
                f"{split[-1]['train_tools']} tools in {split[-1]['train_categories']} categories "
                "(categories from the tool documents). ToolBench's split: 0 tools seen in G1-tool, "
                "0 categories seen in G1-category and G2-category."])
    return text
