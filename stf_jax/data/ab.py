"""A/B multiple-choice behaviour items (Contrastive Activation Addition form): parsing, and the item forms.

An item is a question with lettered choices, one of which shows a behaviour. As a contrast pair,
`positive` answers with the behaviour-matching letter and `negative` with another, the texts otherwise the
same. The forms differ in what follows the letter and where the question sits:

- ``letter`` (the shipped "ab" set): "...Answer: (A)"; vectors read at the letter (`--pooling letter`).
- ``whole``: "...Answer: (A) <the text of choice A>"; the vector reads the whole answer (`--pooling last`).
- ``chat`` (and ``chat-whole``): the question and choices are the user's turn (the pair's `prompt`), the
  answer "(A)" (or "(A) <text>") the assistant's, so extraction with `--chat-template` puts the item inside
  each model's template, as CAA did with Llama 2 Chat.

`load_pairs("ab-whole" | "ab-chat" | "ab-chat-whole")` makes the shipped items in those forms (same ids and
train/test split); `ab_form` turns any items into them. `item_from_pair` reads every form back into the
`ABItem` the letter scorer needs: the text up to the "(" of the answer, the choice letters, the matching one.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from ..errors import UserError
from .pairs import GENERATED, load_pairs
from .schema import ContrastPair

CHOICE_RE = re.compile(r"^\s*\(([A-Z])\)[ \t]*(.*)$", re.MULTILINE)
ANSWER_RE = re.compile(r"\(([A-Z])\)([^\n]*)$")  # the first "(X)" of the last line, and the rest of that line
ANSWER_CUE = "Answer:"
FORMS = ("letter", "whole", "chat", "chat-whole")


class ABItemError(UserError, ValueError):
    """An A/B item that cannot be scored (no answer letter, one choice, sides that differ elsewhere)."""


@dataclasses.dataclass(frozen=True)
class ABItem:
    id: str
    behaviour: str
    prompt: str                  # the text up to and including "(" of the answer: the letter comes next
    letters: tuple[str, ...]     # the choice letters, in order
    matching: str                # the behaviour-matching letter
    user: str | None = None      # chat form: the user's turn (question and choices); the answer starts with "("
    choices: tuple[str, ...] = ()  # the text of each choice, as listed

    @property
    def answer_prefix(self) -> str:
        """What precedes the letter in the answer itself: "(" in the chat form, else the whole prompt."""
        return "(" if self.user is not None else self.prompt


def _split_answer(text: str, where: str) -> tuple[str, str, str]:
    """(text before the answer's "(", the letter, what follows ")" on that line)."""
    m = ANSWER_RE.search(text.rstrip())
    if not m:
        raise ABItemError(f"{where}: the positive and negative texts must end with a lettered answer such as "
                          "'(A)' and '(B)' (optionally followed by the choice's text)")
    return text[:m.start()], m.group(1), m.group(2).strip()


def item_from_pair(pair: ContrastPair) -> ABItem:
    """An ABItem from a contrast pair whose sides end "(X)" and "(Y)" (optionally each followed by the text of
    that choice) and are otherwise the same text; in the chat form the question is the pair's prompt."""
    where = f"A/B item {pair.id!r}"
    head_p, letter_p, tail_p = _split_answer(pair.positive, where)
    head_n, letter_n, tail_n = _split_answer(pair.negative, where)
    if head_p != head_n or letter_p == letter_n:
        raise ABItemError(f"{where}: the two sides must be the same question with different answer letters")
    question = (pair.prompt + "\n\n" if pair.prompt else "") + head_p
    listed = dict(CHOICE_RE.findall(question))
    letters = tuple(listed)
    if len(letters) < 2 or letter_p not in letters or letter_n not in letters:
        raise ABItemError(f"{where}: the question must list at least two lettered choices ' (A) ...' that include "
                          f"both answers ({letter_p}, {letter_n}); found {list(letters)}")
    for letter, tail in ((letter_p, tail_p), (letter_n, tail_n)):
        if tail and tail != listed[letter].strip():
            raise ABItemError(f"{where}: the answer '({letter}) {tail[:40]}' is not the text of choice ({letter}) as "
                              f"listed ('{listed[letter].strip()[:40]}')")
    chat = bool(pair.prompt) and not head_p.strip()
    return ABItem(pair.id, pair.trait, question + "(", letters, letter_p, user=pair.prompt if chat else None,
                  choices=tuple(listed[x].strip() for x in letters))


def ab_form(pairs: list[ContrastPair], form: str) -> list[ContrastPair]:
    """The items in another form (module docstring); ids, behaviours, sources and splits kept."""
    if form not in FORMS:
        raise ABItemError(f"unknown A/B form {form!r}; choose one of {', '.join(FORMS)}")
    out = []
    for p in pairs:
        it = item_from_pair(p)
        if it.user is not None:
            raise ABItemError(f"A/B item {p.id!r} is already in the chat form; give the plain items")
        other = _split_answer(p.negative, p.id)[1]
        whole = form.endswith("whole")

        def answer(letter: str) -> str:
            return f"({letter})" + (f" {it.choices[it.letters.index(letter)]}" if whole else "")

        stem = it.prompt[:-1]  # the question, choices and "Answer: "
        if form.startswith("chat"):
            user = stem.rstrip().removesuffix(ANSWER_CUE).rstrip()
            out.append(dataclasses.replace(p, prompt=user, positive=answer(it.matching), negative=answer(other)))
        else:
            out.append(dataclasses.replace(p, prompt="", positive=stem + answer(it.matching),
                                           negative=stem + answer(other)))
    return out


def read_ab_items(path: str | Path) -> list[ContrastPair]:
    """ContrastPairs from a file of A/B items in either form: the pair form (`data.load_pairs`), or the raw
    CAA form with `question`, `answer_matching_behavior`, `answer_not_matching_behavior` (and `behavior`,
    else the file name, as the trait); every item checked with `item_from_pair`."""
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    first = text.lstrip()[:1]
    records = None
    if first in "[{" and "answer_matching_behavior" in text[:20000]:
        try:
            records = json.loads(text) if first == "[" else [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise ABItemError(f"{path}: not JSON or JSONL ({exc})") from None
    if records is None:
        pairs = load_pairs(path)
    else:
        pairs = []
        for i, r in enumerate(records):
            try:
                q, yes, no = r["question"], r["answer_matching_behavior"], r["answer_not_matching_behavior"]
            except (KeyError, TypeError):
                raise ABItemError(f"{path}: item {i}: needs question, answer_matching_behavior and "
                                  "answer_not_matching_behavior") from None
            trait = str(r.get("behavior", path.stem))
            stem = q.rstrip() + f"\n\n{ANSWER_CUE} "
            pairs.append(ContrastPair(id=f"{trait}-{i:04d}", trait=trait, prompt="", positive=stem + str(yes).strip(),
                                      negative=stem + str(no).strip(), source=str(path)))
    for p in pairs:
        item_from_pair(p)
    return pairs


for _form in FORMS[1:]:  # load_pairs("ab-whole"), --pairs ab-chat, ...
    GENERATED[f"ab-{_form}"] = lambda form=_form: ab_form(load_pairs("ab"), form)
