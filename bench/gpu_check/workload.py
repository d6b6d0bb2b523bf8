"""The requests the checks run: synthetic passages, questions and answers in plain
English (SmolLM2's tokenizer, random weights: only their lengths and sharing matter)."""

from __future__ import annotations

import random

SUBJECTS = (
    "the old farmer",
    "a young teacher",
    "the village council",
    "my neighbour",
    "the ship's captain",
    "a travelling merchant",
    "the children",
    "the museum guide",
    "our new doctor",
    "the river pilot",
    "her grandmother",
    "the night watchman",
)
VERBS = (
    "carried",
    "repaired",
    "painted",
    "described",
    "sold",
    "found",
    "measured",
    "borrowed",
    "cleaned",
    "counted",
    "wrapped",
    "forgot",
)
OBJECTS = (
    "the wooden bridge",
    "a basket of apples",
    "the broken clock",
    "three letters from the city",
    "the map of the valley",
    "an old brass lamp",
    "the school's records",
    "a box of seeds",
    "the harbour wall",
    "the winter coats",
    "a jar of honey",
    "the church bells",
)
TAILS = (
    "before the rain began.",
    "after a long morning at the market.",
    "while the others were asleep.",
    "because nobody else had the time.",
    "on the first warm day of spring.",
    "without saying a word to anyone.",
    "as the bells rang for noon.",
    "for the festival at the end of the week.",
    "and then walked home along the river.",
    "although the road was covered in snow.",
)


def sentence(rng: random.Random) -> tuple[str, str, str, str]:
    return rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS), rng.choice(TAILS)


def passage(facts) -> str:
    return " ".join(f"{s[0].upper()}{s[1:]} {v} {o} {t}" for s, v, o, t in facts)


def make_requests(n_contexts: int, seed: int = 17):
    """Multiple-choice-like requests: a passage of 6-28 sentences (~100-400 tokens), a
    question, four answers of which one is right. Returns (requests, context index of each)."""
    from llmboard.inference.engine import LoglikelihoodRequest

    rng = random.Random(seed)
    requests, groups = [], []
    for g in range(n_contexts):
        facts = [sentence(rng) for _ in range(rng.randint(6, 28))]
        subject, verb, obj, _ = rng.choice(facts)
        context = f"{passage(facts)}\nQuestion: What did {subject} do?\nAnswer:"
        answers = {f" {verb} {obj}"}
        while len(answers) < 4:
            answers.add(f" {rng.choice(VERBS)} {rng.choice(OBJECTS)}")
        for a in sorted(answers):
            requests.append(LoglikelihoodRequest(context, a))
            groups.append(g)
    return requests, groups


def question(rng: random.Random, n_sentences: int) -> tuple[str, str, list[str]]:
    """A short passage and its question: (text ending in "Answer:", right answer, others)."""
    facts = [sentence(rng) for _ in range(n_sentences)]
    subject, verb, obj, _ = rng.choice(facts)
    text = f"{passage(facts)}\nQuestion: What did {subject} do?\nAnswer:"
    right = f" {verb} {obj}"
    wrong: set[str] = set()
    while len(wrong) < 3:
        if (a := f" {rng.choice(VERBS)} {rng.choice(OBJECTS)}") != right:
            wrong.add(a)
    return text, right, sorted(wrong)


def make_fewshot_requests(n_subjects: int, n_questions: int, seed: int = 23):
    """MMLU 5-shot's shape: per subject a description and five solved examples (~600
    tokens, the same for every question of the subject), then a 2-sentence question
    (~50 tokens) and four answers. Returns (requests, question index of each)."""
    from llmboard.inference.engine import LoglikelihoodRequest

    rng = random.Random(seed)
    requests, groups = [], []
    for s in range(n_subjects):
        shots = []
        for _ in range(5):
            text, right, _ = question(rng, rng.randint(4, 6))
            shots.append(text + right)
        head = f"The following are questions (with answers) about subject {s}.\n\n"
        prefix = head + "\n\n".join(shots) + "\n\n"
        for q in range(n_questions):
            text, right, wrong = question(rng, 2)
            for a in sorted([right, *wrong]):
                requests.append(LoglikelihoodRequest(prefix + text, a))
                groups.append(s * n_questions + q)
    return requests, groups


def make_generation_requests(n_prompts: int, max_gen: int, seed: int = 29):
    """GSM8K chain-of-thought's shape: the same eight solved examples (~700 tokens) before
    every question; greedy until a blank line or "Question:"."""
    from llmboard.inference.engine import GenerationRequest

    rng = random.Random(seed)
    shots = []
    for _ in range(8):
        text, right, _ = question(rng, rng.randint(4, 6))
        shots.append(f"{text}{right}. So the answer is{right}.")
    prefix = "\n\n".join(shots) + "\n\n"
    return [
        GenerationRequest(prefix + question(rng, 2)[0], ("\n\n", "Question:"), max_gen)
        for _ in range(n_prompts)
    ]
