"""BFCL's own verdicts, for bench/bfcl_agreement.py: run only inside the throw-away environment
that script makes (bfcl-eval with its dependencies), never in the project's.

    VENV/bin/python bench/bfcl_agreement_theirs.py --probe
    VENV/bin/python bench/bfcl_agreement_theirs.py IN.json OUT.json

Imports bfcl-eval's real, unmodified code: eval_checker.ast_eval.ast_checker.ast_checker, the
prompting handlers' decoder (model_handler.utils.default_decode_ast_prompting) and the runner's
call-list tests (utils.is_function_calling_format_output, is_empty_output). Each prediction goes
the way eval_checker/eval_runner.py sends a model's output: decode (raw text only), then for the
irrelevance categories "no call made", otherwise the format test and then ast_checker.
Nothing from lib is imported here: the project is not installed in that environment.
"""
from __future__ import annotations

import copy
import importlib.metadata
import json
import sys


def _bfcl():
    # Imported on use, so the project's tests can import this file without bfcl-eval's dependencies.
    from bfcl_eval.constants.enums import Language, ReturnFormat
    from bfcl_eval.constants.model_config import MODEL_CONFIG_MAPPING
    from bfcl_eval.eval_checker.ast_eval import ast_checker as checker_module
    from bfcl_eval.model_handler.utils import default_decode_ast_prompting
    from bfcl_eval.utils import is_empty_output, is_function_calling_format_output
    return dict(Language=Language, ReturnFormat=ReturnFormat, models=MODEL_CONFIG_MAPPING,
                module=checker_module, decode=default_decode_ast_prompting,
                is_empty=is_empty_output, is_call_list=is_function_calling_format_output)


def model_name(models) -> str:
    # ast_checker renames dotted functions only for models whose API forbids dots; the project's
    # rules compare names as written, so a model without that renaming is the like-for-like one.
    return next(name for name in sorted(models)
                if "_" not in name and not models[name].underscore_to_dot)


def probe() -> dict:
    """What the environment holds: the versions that matter and whether the real checker imports."""
    api = _bfcl()
    dists = {d.metadata["Name"].lower().replace("_", "-"): d.version for d in importlib.metadata.distributions()}
    import torch
    return {"ast_checker": api["module"].__file__, "model_name": model_name(api["models"]),
            "python": sys.version.split()[0], "bfcl-eval": dists.get("bfcl-eval"),
            "torch": torch.__version__, "torch_cuda": torch.version.cuda,
            "sentence-transformers": dists.get("sentence-transformers"),
            "distributions": len(dists), "nvidia_packages": sorted(n for n in dists if n.startswith("nvidia"))}


def verdict(api, model: str, question: dict, output: dict) -> dict:
    """One prediction as eval_runner.py judges it (_evaluate_single_ast_entry / _relevance_entry)."""
    decoded, decode_error = None, ""
    if "raw" in output:
        try:
            decoded = api["decode"](output["raw"], api["ReturnFormat"].PYTHON, False)
        except Exception as e:          # the runner catches every decoder failure the same way
            decode_error = f"{type(e).__name__}: {e}"
    else:
        decoded = output["calls"]
    category = question["category"]
    if "irrelevance" in category:
        made_call = not decode_error and not api["is_empty"](decoded)
        return {"valid": not made_call, "decoded": not decode_error,
                "error_type": "irrelevance_error:decoder_success" if made_call else "", "error": ""}
    if decode_error:
        return {"valid": False, "decoded": False, "error_type": "ast_decoder:decoder_failed", "error": decode_error}
    if not api["is_call_list"](decoded):
        return {"valid": False, "decoded": True, "error_type": "ast_decoder:decoder_wrong_output_format",
                "error": "Did not output in the specified format."}
    result = api["module"].ast_checker(copy.deepcopy(question["functions"]), copy.deepcopy(decoded),
                                       copy.deepcopy(question["ground_truth"]), api["Language"].PYTHON,
                                       category, model)
    return {"valid": result["valid"], "decoded": True, "error_type": result.get("error_type", ""),
            "error": " ".join(map(str, result.get("error", [])))}


def main(argv: list[str]) -> int:
    if argv == ["--probe"]:
        print(json.dumps(probe()))
        return 0
    source, target = argv
    api = _bfcl()
    model = model_name(api["models"])
    data = json.loads(open(source, encoding="utf-8").read())
    out = []
    for item in data["predictions"]:
        try:
            out.append(verdict(api, model, data["questions"][item["question"]], item["output"]))
        except Exception as e:          # a crash is a verdict to report, not a reason to stop
            out.append({"valid": None, "decoded": None, "error_type": "crash", "error": f"{type(e).__name__}: {e}"})
    with open(target, "w", encoding="utf-8") as f:
        json.dump({"model_name": model, "verdicts": out}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
