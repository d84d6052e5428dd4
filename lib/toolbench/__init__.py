"""ToolBench's world, independent of any model: its formats and name rules, training records,
tool environments, ToolEval's rules and evaluator, released answers, and the offline sample corpus."""
