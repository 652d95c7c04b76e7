"""A rule-generated English acceptability corpus: the offline stand-in for CoLA.

Acceptable sentences come from a small phrase-structure grammar with real morphology (number
agreement, irregular verbs, transitive/intransitive/clause-taking verbs, adjectives, subject and
object relative clauses, complement clauses, modals, perfect/progressive aspect, negation, PPs).
Unacceptable sentences are *fresh* grammatical sentences damaged by one controlled corruption
(agreement violation, determiner-number mismatch, doubled or missing determiner, word-order swap,
missing or extra argument, wrong verb form, filled relative-clause gap), so a classifier has to
learn syntax rather than vocabulary. Every corruption is chosen so that it cannot accidentally
produce a grammatical string (e.g. the subject is only dropped when the result is not an
imperative, objects are only dropped from obligatorily transitive verbs).

Output mimics the tokenized CoLA release: lower case, space-separated tokens, ``n't`` split off,
no final full stop. Everything is a pure function of the seed (``random.Random``), so the corpus is
identical on every machine and Python version.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

# --------------------------------------------------------------------------------------- lexicon


@dataclass(frozen=True)
class Noun:
    sg: str
    pl: str
    animate: bool

    def form(self, plural: bool) -> str:
        return self.pl if plural else self.sg


@dataclass(frozen=True)
class Verb:
    base: str
    s3: str
    past: str
    pp: str
    ing: str
    kind: str  # "intr" | "trans" | "comp" (takes a that-clause)
    subj_animate: bool = True  # "the book fell" is fine, "the book laughed" is not
    obligatory: bool = False  # transitive verbs that cannot drop their object
    stative: bool = False  # no progressive ("is knowing" is odd)

    def present(self, plural: bool) -> str:
        return self.base if plural else self.s3


def _n(sg: str, pl: str | None = None, animate: bool = True) -> Noun:
    return Noun(sg, pl or sg + "s", animate)


# Count nouns only: dropping the determiner of a singular must be ungrammatical ("ate cake" is not).
ANIMATE = [
    _n("dog"), _n("cat"), _n("child", "children"), _n("teacher"), _n("student"),
    _n("man", "men"), _n("woman", "women"), _n("farmer"), _n("doctor"), _n("bird"),
    _n("mouse", "mice"), _n("girl"), _n("boy"), _n("artist"), _n("pilot"), _n("lawyer"),
    _n("neighbor"), _n("singer"), _n("king"), _n("nurse"), _n("baby", "babies"),
    _n("wolf", "wolves"), _n("friend"), _n("soldier"),
]  # fmt: skip
THINGS = [
    _n("book", animate=False), _n("letter", animate=False), _n("car", animate=False),
    _n("window", animate=False), _n("apple", animate=False), _n("song", animate=False),
    _n("box", "boxes", False), _n("picture", animate=False), _n("house", animate=False),
    _n("story", "stories", False), _n("door", animate=False), _n("key", animate=False),
    _n("bottle", animate=False), _n("photograph", animate=False), _n("chair", animate=False),
    _n("knife", "knives", False), _n("map", animate=False), _n("ticket", animate=False),
    _n("sandwich", "sandwiches", False), _n("poem", animate=False),
]  # fmt: skip
PLACES = [
    _n(w, animate=False)
    for w in ("garden", "kitchen", "park", "station", "market", "village", "forest", "cafe")
] + [_n("library", "libraries", False)]


def _v(base, s3, past, pp, ing, kind, subj_animate=True, obligatory=False, stative=False) -> Verb:
    return Verb(base, s3, past, pp, ing, kind, subj_animate, obligatory, stative)


VERBS = [
    # intransitive: no direct object possible ("the dog slept the book" is out)
    _v("sleep", "sleeps", "slept", "slept", "sleeping", "intr"),
    _v("arrive", "arrives", "arrived", "arrived", "arriving", "intr"),
    _v("sneeze", "sneezes", "sneezed", "sneezed", "sneezing", "intr"),
    _v("laugh", "laughs", "laughed", "laughed", "laughing", "intr"),
    _v("yawn", "yawns", "yawned", "yawned", "yawning", "intr"),
    _v("vanish", "vanishes", "vanished", "vanished", "vanishing", "intr", False),
    _v("disappear", "disappears", "disappeared", "disappeared", "disappearing", "intr", False),
    _v("fall", "falls", "fell", "fallen", "falling", "intr", False),
    _v("collapse", "collapses", "collapsed", "collapsed", "collapsing", "intr", False),
    # transitive; obligatory=True where "the man found" is ungrammatical
    _v("find", "finds", "found", "found", "finding", "trans", obligatory=True),
    _v("need", "needs", "needed", "needed", "needing", "trans", obligatory=True, stative=True),
    _v("admire", "admires", "admired", "admired", "admiring", "trans", obligatory=True),
    _v("mention", "mentions", "mentioned", "mentioned", "mentioning", "trans", obligatory=True),
    _v("describe", "describes", "described", "described", "describing", "trans", obligatory=True),
    _v("avoid", "avoids", "avoided", "avoided", "avoiding", "trans", obligatory=True),
    _v("carry", "carries", "carried", "carried", "carrying", "trans", obligatory=True),
    _v("hide", "hides", "hid", "hidden", "hiding", "trans"),
    _v("bring", "brings", "brought", "brought", "bringing", "trans", obligatory=True),
    _v("destroy", "destroys", "destroyed", "destroyed", "destroying", "trans", obligatory=True),
    _v("see", "sees", "saw", "seen", "seeing", "trans", stative=True),
    _v("take", "takes", "took", "taken", "taking", "trans", obligatory=True),
    _v("write", "writes", "wrote", "written", "writing", "trans"),
    _v("read", "reads", "read", "read", "reading", "trans"),
    _v("break", "breaks", "broke", "broken", "breaking", "trans"),
    _v("watch", "watches", "watched", "watched", "watching", "trans"),
    _v("forget", "forgets", "forgot", "forgotten", "forgetting", "trans"),
    _v("choose", "chooses", "chose", "chosen", "choosing", "trans"),
    # clause-taking verbs ("the man said that ...")
    _v("say", "says", "said", "said", "saying", "comp"),
    _v("think", "thinks", "thought", "thought", "thinking", "comp"),
    _v("know", "knows", "knew", "known", "knowing", "comp", stative=True),
    _v("believe", "believes", "believed", "believed", "believing", "comp", stative=True),
    _v("suspect", "suspects", "suspected", "suspected", "suspecting", "comp"),
]
ADJ_ANY = ["big", "small", "old", "new", "red", "heavy", "strange", "famous", "green", "lovely"]
ADJ_ANIMATE = ["happy", "tired", "clever", "lazy", "angry", "young", "hungry", "nervous"]
MODALS = ["will", "can", "should", "might", "must", "could", "would"]
ADVERBS = ["again", "quietly", "at night", "twice", "there"]  # tense-neutral ("will ... yesterday")
PREPS = ["in", "near", "behind", "outside"]

DET_SG = ["a", "every", "each", "this", "that"]  # only with singular count nouns
DET_PL = ["these", "those", "several", "many", "two", "three", "some"]  # only with plurals
DET_ANY = ["the", "the", "the", "my", "his", "her", "our", "their", "no"]  # "the" most frequent
# used by corruptions; number-unambiguous so a swap is always a mismatch
DET_SG_STRICT = ["a", "every", "each", "this"]
DET_PL_STRICT = ["these", "those", "several", "many", "two", "three"]
VOWELS = "aeiou"
# past forms that are also the base form of another verb ("will found a company", "fell a tree",
# "saw the wood"): never used as a "wrong" form after a modal or do-support
AMBIGUOUS_PAST = {"found", "fell", "saw"}
DOUBLE_DET_TARGETS = {
    "the",
    "a",
    "an",
    "this",
    "that",
    "these",
    "those",
    "my",
    "his",
    "her",
    "our",
    "their",
}

AGREE_FLIP = {
    "is": "are",
    "are": "is",
    "was": "were",
    "were": "was",
    "has": "have",
    "have": "has",
    "does": "do",
    "do": "does",
}

# -------------------------------------------------------------------------- structured rendering


@dataclass
class Tok:
    """A word with the syntactic role the corruptions need to find it again."""

    text: str
    role: str  # det, adj, noun, relpron, verb, aux, neg, comp, prep, adv
    np: int = -1  # id of the noun phrase the token belongs to (-1: none)
    clause: int = 0  # 0 = main clause
    info: dict = field(default_factory=dict)


class _Builder:
    """Draws one grammatical sentence as a list of annotated tokens."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.np_count = 0
        self.clause_count = 0
        self.nps: dict[int, dict] = {}  # np id -> {"plural", "clause", "slot", "adjs"}
        self.clauses: dict[int, dict] = {}  # clause id -> {"tense", "verb", "subj_np", "obj_np"}

    # ----- noun phrases
    def noun_phrase(
        self, clause: int, slot: str, animate: bool | None, allow_rel: bool, depth: int
    ) -> list[Tok]:
        rng = self.rng
        if animate is None:
            animate = rng.random() < 0.5
        noun = rng.choice(ANIMATE if animate else THINGS)
        plural = rng.random() < 0.4
        npid = self.np_count
        self.np_count += 1
        det = rng.choice(DET_ANY + (DET_PL if plural else DET_SG))
        adjs: list[str] = []
        if rng.random() < 0.35:
            pool = ADJ_ANY + (ADJ_ANIMATE if animate else [])
            adjs = rng.sample(pool, 2 if rng.random() < 0.2 else 1)
        toks = [Tok(det, "det", npid, clause)]
        toks += [Tok(a, "adj", npid, clause) for a in adjs]
        toks.append(Tok(noun.form(plural), "noun", npid, clause, {"noun": noun}))
        self.nps[npid] = {"plural": plural, "clause": clause, "slot": slot, "adjs": len(adjs)}
        if allow_rel and depth == 0 and rng.random() < 0.3:
            toks += self.relative(npid, animate, plural, depth)
        return toks

    def relative(self, head: int, animate: bool, plural: bool, depth: int) -> list[Tok]:
        rng = self.rng
        clause = self._new_clause()
        pron = rng.choice(["that", "who"] if animate else ["that", "which"])
        toks = [Tok(pron, "relpron", head, clause)]
        trans = [v for v in VERBS if v.kind == "trans"]
        if rng.random() < 0.5:  # subject relative: "the dog that chased the cat"
            verb = rng.choice(
                [v for v in VERBS if v.kind != "comp" and (animate or not v.subj_animate)]
            )
            toks += self.finite_verb(clause, verb, plural, simple_only=True)
            self.clauses[clause].update(kind="subjrel", verb=verb)
            if verb.kind == "trans":
                obj = self.noun_phrase(clause, "obj", None, False, depth + 1)
                self.clauses[clause]["obj_np"] = obj[0].np
                toks += obj
        else:  # object relative with a gap: "the book that the man read"
            verb = rng.choice(trans)
            subj = self.noun_phrase(clause, "subj", True, False, depth + 1)
            toks += subj
            toks += self.finite_verb(clause, verb, self.nps[subj[0].np]["plural"], simple_only=True)
            self.clauses[clause].update(kind="objrel", verb=verb, subj_np=subj[0].np)
        for t in toks:
            t.info.setdefault("in_rel", True)
        return toks

    def _new_clause(self) -> int:
        cid = self.clause_count
        self.clause_count += 1
        self.clauses[cid] = {}
        return cid

    # ----- verbs
    def finite_verb(self, clause: int, verb: Verb, plural: bool, simple_only=False) -> list[Tok]:
        """The verbal complex; records the tense so corruptions know which forms are licensed."""
        rng = self.rng
        tenses = ["past", "present"] if simple_only else [
            "past", "past", "present", "present", "modal", "perfect", "prog", "neg"
        ]  # fmt: skip
        tense = rng.choice([t for t in tenses if not (t == "prog" and verb.stative)])
        self.clauses[clause]["tense"] = tense
        vi = {"verb": verb}
        if tense == "past":
            return [Tok(verb.past, "verb", clause=clause, info={**vi, "form": "past"})]
        if tense == "present":
            return [Tok(verb.present(plural), "verb", clause=clause, info={**vi, "form": "agr"})]
        if tense == "modal":
            return [
                Tok(rng.choice(MODALS), "aux", clause=clause, info={"aux": "modal"}),
                Tok(verb.base, "verb", clause=clause, info={**vi, "form": "base"}),
            ]
        if tense == "perfect":
            aux = "have" if plural else "has"
            if rng.random() < 0.3:
                aux = "had"
            return [
                Tok(aux, "aux", clause=clause, info={"aux": "have", "agr": aux != "had"}),
                Tok(verb.pp, "verb", clause=clause, info={**vi, "form": "pp"}),
            ]
        if tense == "prog":
            past = rng.random() < 0.4
            aux = ("were" if plural else "was") if past else ("are" if plural else "is")
            return [
                Tok(aux, "aux", clause=clause, info={"aux": "be", "agr": True}),
                Tok(verb.ing, "verb", clause=clause, info={**vi, "form": "ing"}),
            ]
        # negation with do-support
        past = rng.random() < 0.4
        aux = "did" if past else ("do" if plural else "does")
        return [
            Tok(aux, "aux", clause=clause, info={"aux": "do", "agr": not past}),
            Tok("n't", "neg", clause=clause),
            Tok(verb.base, "verb", clause=clause, info={**vi, "form": "base"}),
        ]

    def clause(self, depth: int) -> list[Tok]:
        rng = self.rng
        cid = self._new_clause()
        kinds = ["intr", "trans", "trans"] + (["comp"] if depth == 0 else [])
        kind = rng.choice(kinds)
        subj_animate = kind != "intr" or rng.random() < 0.7
        verb = rng.choice(
            [v for v in VERBS if v.kind == kind and (subj_animate or not v.subj_animate)]
        )
        subj = self.noun_phrase(cid, "subj", subj_animate, depth == 0, depth)
        plural = self.nps[subj[0].np]["plural"]
        vp = self.finite_verb(cid, verb, plural)
        self.clauses[cid].update(
            kind="main" if depth == 0 else "comp", verb=verb, subj_np=subj[0].np
        )
        toks = subj + vp
        if kind == "trans":
            obj = self.noun_phrase(cid, "obj", None, depth == 0, depth)
            self.clauses[cid]["obj_np"] = obj[0].np
            toks += obj
        elif kind == "comp":
            toks.append(Tok("that", "comp", clause=cid))
            toks += self.clause(depth + 1)
        if kind != "comp" and rng.random() < 0.4:
            if rng.random() < 0.5:
                toks += [Tok(w, "adv", clause=cid) for w in rng.choice(ADVERBS).split()]
            else:
                npid = self.np_count
                self.np_count += 1
                plural_pp = rng.random() < 0.3
                place = rng.choice(PLACES)
                det = rng.choice(["the", "the", "my", "our"] + (["these"] if plural_pp else ["a"]))
                self.nps[npid] = {"plural": plural_pp, "clause": cid, "slot": "pp", "adjs": 0}
                toks += [
                    Tok(rng.choice(PREPS), "prep", clause=cid),
                    Tok(det, "det", npid, cid),
                    Tok(place.form(plural_pp), "noun", npid, cid),
                ]
        return toks


def _fix_articles(words: list[str]) -> list[str]:
    """a/an by the next word's first letter (the lexicon has no 'hour'/'university' cases)."""
    out = list(words)
    for i, w in enumerate(out[:-1]):
        if w in ("a", "an"):
            out[i] = "an" if out[i + 1][0] in VOWELS else "a"
    return out


def _text(toks: list[Tok]) -> str:
    return " ".join(_fix_articles([t.text for t in toks]))


# ------------------------------------------------------------------------------------ corruptions


def _np_span(toks: list[Tok], npid: int) -> tuple[int, int]:
    """``[start, end)`` of a noun phrase with its relative clause (contiguous by construction)."""
    start = next(i for i, t in enumerate(toks) if t.np == npid)
    end, rel_clause = start, None
    for i in range(start, len(toks)):
        t = toks[i]
        if t.np == npid:
            rel_clause = t.clause if t.role == "relpron" else rel_clause
        elif rel_clause is None or t.clause != rel_clause:
            break
        end = i + 1
    return start, end


def _c_agreement(b: _Builder, toks: list[Tok], rng: random.Random) -> list[Tok] | None:
    """Subject-verb agreement violation ("the dogs barks", "the dog have slept")."""
    cands = [
        i
        for i, t in enumerate(toks)
        if (t.role == "verb" and t.info.get("form") == "agr")
        or (t.role == "aux" and t.info.get("agr"))
    ]
    if not cands:
        return None
    i = rng.choice(cands)
    t = toks[i]
    if t.role == "aux":
        new = AGREE_FLIP[t.text]
    else:
        v: Verb = t.info["verb"]
        new = v.s3 if t.text == v.base else v.base
    out = list(toks)
    out[i] = Tok(new, t.role, t.np, t.clause, t.info)
    return out


def _c_det_number(b: _Builder, toks: list[Tok], rng: random.Random) -> list[Tok] | None:
    """Determiner-noun number mismatch ("these dog", "a dogs")."""
    cands = [i for i, t in enumerate(toks) if t.role == "det"]
    i = rng.choice(cands)
    plural = b.nps[toks[i].np]["plural"]
    out = list(toks)
    out[i] = Tok(
        rng.choice(DET_SG_STRICT if plural else DET_PL_STRICT), "det", toks[i].np, toks[i].clause
    )
    return out


def _c_double_det(b: _Builder, toks: list[Tok], rng: random.Random) -> list[Tok] | None:
    """Doubled determiner ("the the dog", "my a book").

    Never before numerals/quantifiers/"every": "the two dogs", "my many friends", "this many" and
    "his every move" are all grammatical.
    """
    cands = [i for i, t in enumerate(toks) if t.role == "det" and t.text in DOUBLE_DET_TARGETS]
    if not cands:
        return None
    i = rng.choice(cands)
    extra = rng.choice(["the", "the", "a", "my", "this", "those"])
    return [*toks[:i], Tok(extra, "det", toks[i].np, toks[i].clause), *toks[i:]]


def _c_missing_det(b: _Builder, toks: list[Tok], rng: random.Random) -> list[Tok] | None:
    """Bare singular count noun ("the man found book")."""
    # not after "that": "said that dog slept" / "the book that man read" would be grammatical
    cands = [
        i
        for i, t in enumerate(toks)
        if t.role == "det" and not b.nps[t.np]["plural"] and (i == 0 or toks[i - 1].text != "that")
    ]
    if not cands:
        return None
    i = rng.choice(cands)
    return toks[:i] + toks[i + 1 :]


def _c_det_noun_swap(b: _Builder, toks: list[Tok], rng: random.Random) -> list[Tok] | None:
    """Word order: noun before its determiner ("dog the slept")."""
    cands = [i for i, t in enumerate(toks[:-1]) if t.role == "det" and toks[i + 1].role == "noun"]
    if not cands:
        return None
    i = rng.choice(cands)
    out = list(toks)
    out[i], out[i + 1] = out[i + 1], out[i]
    return out


def _c_adj_after_noun(b: _Builder, toks: list[Tok], rng: random.Random) -> list[Tok] | None:
    """Word order: adjective after the subject noun ("the dog old slept").

    Only in subject position: after an object ("found the dog tired") it would be a small clause.
    """
    cands = [
        i
        for i, t in enumerate(toks)
        if t.role == "adj" and b.nps[t.np]["slot"] == "subj" and not t.info.get("in_rel")
    ]
    if not cands:
        return None
    i = rng.choice(cands)
    npid = toks[i].np
    noun = next(j for j in range(i, len(toks)) if toks[j].role == "noun" and toks[j].np == npid)
    out = list(toks)
    adj = out.pop(i)
    out.insert(noun, adj)  # noun index shifted left by one, so this lands right after the noun
    return out


def _c_aux_verb_swap(b: _Builder, toks: list[Tok], rng: random.Random) -> list[Tok] | None:
    """Word order: auxiliary after its verb ("the dog sleeping is", "the dog n't did sleep")."""
    cands = [i for i, t in enumerate(toks[:-1]) if t.role == "aux"]
    if not cands:
        return None
    i = rng.choice(cands)
    out = list(toks)
    out[i], out[i + 1] = out[i + 1], out[i]
    return out


def _c_object_before_verb(b: _Builder, toks: list[Tok], rng: random.Random) -> list[Tok] | None:
    """Word order: object moved before the main verb ("the man the book found")."""
    main = b.clauses[0]
    if "obj_np" not in main:
        return None
    s, e = _np_span(toks, main["obj_np"])
    v = next(i for i, t in enumerate(toks) if t.clause == 0 and t.role in ("aux", "verb"))
    obj = toks[s:e]
    rest = toks[:s] + toks[e:]
    return rest[:v] + obj + rest[v:]


def _c_missing_object(b: _Builder, toks: list[Tok], rng: random.Random) -> list[Tok] | None:
    """Missing argument: obligatorily transitive verb without its object ("the man found")."""
    cands = [c for c, d in b.clauses.items() if "obj_np" in d and d["verb"].obligatory]
    if not cands:
        return None
    s, e = _np_span(toks, b.clauses[rng.choice(cands)]["obj_np"])
    return toks[:s] + toks[e:]


def _c_missing_subject(b: _Builder, toks: list[Tok], rng: random.Random) -> list[Tok] | None:
    """Missing subject ("found the book"), never when the rest reads as an imperative."""
    main = b.clauses[0]
    _, e = _np_span(toks, main["subj_np"])
    first = toks[e]
    if first.text in ("do", "have") or (
        first.role == "verb" and first.text == first.info["verb"].base
    ):
        return None
    return toks[e:]


def _c_extra_object(b: _Builder, toks: list[Tok], rng: random.Random) -> list[Tok] | None:
    """Extra argument: an intransitive verb with a direct object ("the child slept the book").

    Not on "fell": "they fell the tree" is the transitive verb *fell*.
    """
    cands = [
        i
        for i, t in enumerate(toks)
        if t.role == "verb" and t.info["verb"].kind == "intr" and t.text not in AMBIGUOUS_PAST
    ]
    if not cands:
        return None
    i = rng.choice(cands)
    obj = b.noun_phrase(toks[i].clause, "obj", None, False, 1)
    return toks[: i + 1] + obj + toks[i + 1 :]


def _c_verb_form(b: _Builder, toks: list[Tok], rng: random.Random) -> list[Tok] | None:
    """Wrong verb form after an auxiliary or in a simple past ("will chased", "has take")."""
    cands = [i for i, t in enumerate(toks) if t.role == "verb" and t.info["form"] != "agr"]
    if not cands:
        return None
    i = rng.choice(cands)
    t = toks[i]
    v: Verb = t.info["verb"]
    # past/participle forms are never offered after "be": "was found" would be a good passive
    wrong = {
        "past": [v.ing],
        "base": [v.s3, v.ing] + ([v.past] if v.past not in AMBIGUOUS_PAST else []),
        "pp": [v.base, v.ing, v.s3, v.past],
        "ing": [v.base, v.s3],
    }[t.info["form"]]
    right = {"past": v.past, "base": v.base, "pp": v.pp, "ing": v.ing}[t.info["form"]]
    wrong = [w for w in wrong if w != right]  # "read"/"read", "found"/"found"
    out = list(toks)
    out[i] = Tok(rng.choice(wrong), "verb", t.np, t.clause, t.info)
    return out


def _c_filled_gap(b: _Builder, toks: list[Tok], rng: random.Random) -> list[Tok] | None:
    """Object relative with its gap filled ("the book that the man read the letter fell")."""
    cands = [c for c, d in b.clauses.items() if d.get("kind") == "objrel"]
    if not cands:
        return None
    c = rng.choice(cands)
    i = next(j for j, t in enumerate(toks) if t.clause == c and t.role == "verb")
    obj = b.noun_phrase(c, "obj", None, False, 1)
    return toks[: i + 1] + obj + toks[i + 1 :]


#: corruption name -> (function, weight). Weights give each error family a similar share (agreement
#: 4, word order 5, determiners 4.5, argument structure 4, verb morphology 2); types that do not
#: apply to a drawn sentence are redrawn, so rare structures (filled gaps) end up rarer. The salient
#: errors ("the the", "dog the") are ~30% of the unacceptable items on purpose: measured with AdamW
#: at lr 5e-5, MiniLM leaves the majority-class plateau after ~100 steps and reaches dev MCC ~0.5 at
#: 150, whereas with only the subtle families (agreement, morphology, missing determiners) MCC was
#: still 0 at step 100. The subtle families keep the task from saturating.
CORRUPTIONS = {
    "agreement": (_c_agreement, 2.5),
    "det_number": (_c_det_number, 1.5),
    "double_det": (_c_double_det, 2.5),
    "missing_det": (_c_missing_det, 2.0),
    "det_noun_swap": (_c_det_noun_swap, 2.0),
    "adj_after_noun": (_c_adj_after_noun, 1.0),
    "aux_verb_swap": (_c_aux_verb_swap, 1.0),
    "object_before_verb": (_c_object_before_verb, 1.0),
    "missing_object": (_c_missing_object, 1.0),
    "missing_subject": (_c_missing_subject, 1.0),
    "extra_object": (_c_extra_object, 1.0),
    "filled_gap": (_c_filled_gap, 1.0),
    "verb_form": (_c_verb_form, 2.0),
}


# ------------------------------------------------------------------------------------ public API


def _draw(rng: random.Random) -> tuple[_Builder, list[Tok]]:
    b = _Builder(rng)
    return b, b.clause(0)


def generate_corpus(
    num_train: int = 3000, num_dev: int = 400, *, seed: int = 0, acceptable_frac: float = 0.7
) -> tuple[list[tuple[str, int]], list[tuple[str, int]], dict[str, int]]:
    """``(train, dev, corruption_counts)``; items are ``(sentence, label)`` with 1 = acceptable.

    Every sentence is unique across both splits and labels (no train/dev leakage, no string that is
    both acceptable and not). Each split has exactly ``round(acceptable_frac * n)`` acceptable
    items.
    """
    if num_train < 1 or num_dev < 1:
        raise ValueError(
            f"corpus sizes must be positive, got num_train={num_train}, num_dev={num_dev}"
        )
    if not 0.0 < acceptable_frac < 1.0:
        raise ValueError(f"acceptable_frac must be in (0, 1), got {acceptable_frac}")
    rng = random.Random(seed)
    seen: set[str] = set()
    counts = dict.fromkeys(CORRUPTIONS, 0)
    names = list(CORRUPTIONS)
    weights = [CORRUPTIONS[n][1] for n in names]

    def make(label: int) -> tuple[str, int]:
        while True:
            b, toks = _draw(rng)
            if label == 1:
                text = _text(toks)
            else:
                name = rng.choices(names, weights)[0]
                bad = CORRUPTIONS[name][0](b, toks, rng)
                if bad is None:
                    continue
                text = _text(bad)
                if text == _text(toks):  # defensive: a corruption must change the string
                    continue
            if text not in seen:
                seen.add(text)
                if label == 0:
                    counts[name] += 1
                return text, label

    splits = []
    for n in (num_train, num_dev):
        n_pos = round(acceptable_frac * n)
        labels = [1] * n_pos + [0] * (n - n_pos)
        rng.shuffle(labels)
        splits.append([make(y) for y in labels])
    return splits[0], splits[1], counts
