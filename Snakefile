# llmboard: fetch -> convert -> infer (shards) -> score -> leaderboard.
# Logic lives in the llmboard package; rules only wire files together.
# Never import torch here: every cluster job re-parses this file.


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/fetch.smk"
include: "rules/convert.smk"
include: "rules/infer.smk"
include: "rules/score.smk"
include: "rules/leaderboard.smk"


rule all:
    input:
        LEADERBOARD_FILES,
    default_target: True
