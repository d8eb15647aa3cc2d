"""A synthetic talk show's sound track with ground truth: who speaks when, what, with which phonemes.

Timeline: music intro (applause over its end) -> host/guest conversation -> host's goodbye ->
applause -> music outro that ends exactly at `duration_s`.

Conversation rules (all choices from the seeded generator, so a seed fixes the whole AudioScript):
- the host opens (welcome, introduction, first question), then asks (1-2 sentences); the addressed
  guest answers (1-4 sentences); in panels the host addresses guests in turn by name and a guest
  sometimes answers another guest; the host says goodbye last;
- inside a guest turn, sentences are separated by real silent pauses of 0.3-1.2 s (cues the host
  reacts to); inside a host turn by 0.2-0.5 s;
- turns follow each other after 0.2-0.8 s, or start 0.3-1.0 s before the previous turn ends
  (overlap); at least 10 % of turns overlap, enforced as the show is written;
- listeners backchannel ("uh-huh", "yeah", ...) in the pauses or over the speech, and people laugh.
A person never overlaps themselves, and listener reactions never fall in a turn's last sentence, so
the next speaker can take the floor without talking over their own backchannel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.synth.sounds import applause, laughter, music
from pipeline.synth.speech import ESPEAK_SAMPLE_RATE, EspeakSynthesizer, Phoneme, Utterance, Voice
from pipeline.synth.style import BROADCAST, WorldStyle

SAMPLE_RATE = ESPEAK_SAMPLE_RATE  # the mix stays at espeak-ng's rate (22.05 kHz)
PEAK = 0.9  # the finished mix is scaled to this peak
MIN_DURATION_S = 20.0  # intro + outro take ~10-14 s; below this there is no room to talk

# Levels before the final peak normalisation (speech utterances are peak-normalised to 1 first).
_SPEECH_PEAK = 0.6
_BACKCHANNEL_GAIN = 0.7
_MUSIC_PEAK = 0.45
_APPLAUSE_PEAK = 0.4

_OVERLAP_FRACTION = 0.10  # guaranteed share of turns that start before the previous one ends
_OVERLAP_PROBABILITY = 0.15  # chance of an overlap beyond the guaranteed share


@dataclass
class CastMember:
    person_id: str
    role: str  # "host" | "guest"
    voice: Voice


@dataclass
class SpeechSegment:
    person_id: str
    start_s: float  # episode seconds
    end_s: float
    text: str
    kind: str  # "speech" | "backchannel" | "laugh"
    phonemes: list[Phoneme]  # ABSOLUTE episode seconds
    turn_index: int  # the turn this belongs to; a listener's reaction carries the speaker's turn
    overlaps_previous: bool  # True on the segment that opens a turn begun before the previous ended


@dataclass
class NonSpeechSegment:
    kind: str  # "music" | "applause"
    start_s: float
    end_s: float


@dataclass
class Turn:
    index: int
    person_id: str
    start_s: float  # first own segment of the turn
    end_s: float  # end of its last own segment (speech or own laugh)
    overlaps_previous: bool


@dataclass
class AudioScript:
    duration_s: float
    sample_rate: int
    segments: list[SpeechSegment]  # sorted by start
    non_speech: list[NonSpeechSegment]
    turns: list[Turn]
    audio: np.ndarray = field(repr=False)  # (round(duration_s * sample_rate),) float32, peak <= 0.9

    def turn_pauses(self) -> list[tuple[int, str, float, float]]:
        """Designed silences inside turns: (turn_index, person_id, start_s, end_s) between the
        speaker's own consecutive segments of one turn."""
        by_turn: dict[int, list[SpeechSegment]] = {}
        for seg in self.segments:
            turn = self.turns[seg.turn_index]
            if seg.person_id == turn.person_id:
                by_turn.setdefault(seg.turn_index, []).append(seg)
        pauses = []
        for index, segs in sorted(by_turn.items()):
            for a, b in zip(segs, segs[1:]):
                if b.start_s > a.end_s:
                    pauses.append((index, a.person_id, a.end_s, b.start_s))
        return pauses


# ---------------------------------------------------------------------------------------------
# Words: templated sentences from talk-show word banks.
# ---------------------------------------------------------------------------------------------

_NAMES = ("Maya", "Daniel", "Priya", "Oliver", "Sofia", "Marcus", "Elena", "Tom", "Grace", "Leo",
          "Nora", "Samuel", "Iris", "Victor", "Hannah", "Omar", "Clara", "Felix", "Ruth", "Jonas")
_PROJECTS = ("new novel", "cooking show", "documentary about whales", "first album", "bakery",
             "climbing expedition", "podcast", "robot startup", "comedy tour", "community garden",
             "film about the ocean", "children's book", "marathon for charity", "music festival",
             "restaurant", "space camera", "dance company", "furniture workshop")
_BIOS = ("wrote one of the books of the year", "just came back from a year at sea",
         "runs the busiest bakery in town", "has been touring the country all summer",
         "built a company out of a garage", "made a film everyone is talking about",
         "climbed some of the highest mountains in the world", "teaches dance to thousands of kids")
_PLACES = ("Lisbon", "a tiny village in Scotland", "Tokyo", "the middle of the desert", "Chicago",
           "my grandmother's kitchen", "a boat off the coast of Norway", "a parking lot in Ohio",
           "Buenos Aires", "a cabin in the mountains", "the back of a van", "Cape Town")
_RELATIVES = ("mother", "father", "brother", "sister", "best friend", "grandmother", "old teacher",
              "business partner", "neighbour")
_YEARS = ("two", "three", "five", "seven", "ten", "twelve", "fifteen", "twenty")
_THINGS = ("oven", "camera", "engine", "laptop", "van", "microphone", "boat", "generator")
_PEOPLE = ("people", "team", "musicians", "investors", "cooks", "dancers", "editors", "sailors")
_SEASONS = ("winter", "summer", "spring", "autumn")
_FEELINGS = ("terrified", "so excited", "completely lost", "incredibly lucky", "exhausted", "proud")

_WELCOMES = ("Good evening, and welcome to the show!", "Welcome back, everybody!",
             "Hello, hello, and welcome to Late Conversations!", "Thank you, thank you, welcome!",
             "Good evening everyone, what a crowd tonight!")
_INTRO_ONE = ("Tonight my guest is {name}, who {bio}.", "I am so happy to have {name} here tonight.",
              "My guest tonight {bio}, please welcome {name}!")
_INTRO_PANEL = ("Tonight I have {names} with me.", "We have a full couch tonight: {names}!",
                "Joining me tonight are {names}.")
_QUESTIONS = (
    "So tell me, how did the {project} start?",
    "What was the hardest part of the {project}?",
    "I have to ask, what does your {relative} think about the {project}?",
    "Where do you find the energy for all of this?",
    "What surprised you most about {place}?",
    "Was there a moment when you wanted to give up?",
    "How long did the {project} actually take?",
    "Who was the first person you told about it?",
    "What is next for you after the {project}?",
    "Is it true that you started in {place}?",
    "What would you tell someone who wants to do the same thing?",
    "How did the {people} react when they heard the idea?",
    "What was the funniest thing that happened along the way?",
    "Do you ever get nervous before a big day?",
    "What did you learn about yourself?",
    "How does a normal day look for you now?",
)
_LEAD_INS = ("That is fascinating.", "I love that.", "Okay, let me turn to you, {name}.",
             "{name}, I want to hear from you.", "Wow, that is quite a story.", "Now, {name}.",
             "Let us talk about the {project}.", "I have been dying to ask you this.")
_ANSWERS = (
    "Well, it all started about {years} years ago in {place}.",
    "Honestly, I never expected it to get this big.",
    "My {relative} told me it was a terrible idea.",
    "We spent the whole {season} working on it every single day.",
    "The hardest part was finding the right {people}.",
    "I remember standing in {place} thinking, what am I doing here?",
    "There was this one night when everything went wrong.",
    "And then the {thing} broke, right before the opening.",
    "But the people there were incredibly kind to us.",
    "I think that is what keeps me going.",
    "It taught me a lot about patience.",
    "We laughed about it for weeks afterwards.",
    "To be honest, I was {feeling} the whole time.",
    "So we packed everything into a van and just drove.",
    "Nobody believed us at first.",
    "My {relative} still brings it up at every dinner.",
    "We had no money, no plan, and a very old {thing}.",
    "After {years} months, something finally clicked.",
    "I made every possible mistake, and then some.",
    "The {people} were the real heroes of the story.",
    "It still feels a little unreal, to be honest.",
    "I wake up every morning and can not believe it.",
    "That first review nearly made me quit.",
    "But you learn to trust the process.",
    "And the weather in {place} did not help at all.",
    "I think everybody should try something like that once.",
)
_CROSS_TALK = (
    "I completely agree with {name} on that.",
    "Can I jump in here for a second?",
    "That reminds me of something that happened to me in {place}.",
    "{name}, I had the exact same experience.",
    "Oh, I have to disagree a little bit.",
    "That is so true, it was the same with my {project}.",
)
_REACTIONS = ("That is amazing.", "Wait, really?", "I can not believe that.", "Oh no.",
              "That is incredible.", "Fair enough.")
_GOODBYES = (
    ("That is all we have time for tonight.", "Thank you so much for coming, {names}!"),
    ("What a wonderful conversation.", "Thank you, {names}, and good night everybody!"),
    ("We have to leave it there.", "Please give it up for {names}!"),
)
# Spellings espeak-ng says as a sound, not as spelled letters ("mm-hm" comes out "M M H M").
_BACKCHANNELS = ("uh-huh", "yeah", "right", "wow", "hmm", "okay", "I see", "sure", "oh", "yes",
                 "hmm hmm", "exactly", "oh wow", "really?", "no way", "of course")


def _lower_first(text: str) -> str:
    return text if text.startswith("I ") else text[:1].lower() + text[1:]


class _Deck:
    """Deals a bank's templates without repeats until all have been used, then reshuffles."""

    def __init__(self, bank: tuple[str, ...], rng: np.random.Generator) -> None:
        self.bank, self.rng, self.order = bank, rng, []

    def deal(self) -> str:
        if not self.order:
            self.order = [int(i) for i in self.rng.permutation(len(self.bank))]
        return self.bank[self.order.pop()]


class _Writer:
    """Fills sentence templates from the word banks; one guest profile per guest."""

    def __init__(self, rng: np.random.Generator, guest_ids: list[str]) -> None:
        self.rng = rng
        self.questions, self.lead_ins = _Deck(_QUESTIONS, rng), _Deck(_LEAD_INS, rng)
        self.answers, self.cross = _Deck(_ANSWERS, rng), _Deck(_CROSS_TALK, rng)
        self.reactions = _Deck(_REACTIONS, rng)
        names = list(rng.permutation(_NAMES))
        projects = list(rng.permutation(_PROJECTS))
        self.name = {pid: str(names[i]) for i, pid in enumerate(guest_ids)}
        self.project = {pid: str(projects[i % len(projects)]) for i, pid in enumerate(guest_ids)}

    def _pick(self, bank: tuple[str, ...]) -> str:
        return bank[int(self.rng.integers(len(bank)))]

    def _fill(self, template: str, guest: str | None = None, names: str = "",
              addressee: str | None = None) -> str:
        """{name} is the addressee's name (default: the guest's); {project} is the guest's."""
        return template.format(
            name=self.name.get(addressee or guest, "friend"), names=names,
            project=self.project.get(guest, "show"),
            bio=self._pick(_BIOS), place=self._pick(_PLACES), relative=self._pick(_RELATIVES),
            years=self._pick(_YEARS), thing=self._pick(_THINGS), people=self._pick(_PEOPLE),
            season=self._pick(_SEASONS), feeling=self._pick(_FEELINGS))

    def names_of(self, guests: list[str]) -> str:
        names = [self.name[g] for g in guests]
        return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]

    def opening(self, guests: list[str]) -> list[str]:
        intro = (self._fill(self._pick(_INTRO_ONE), guests[0]) if len(guests) == 1
                 else self._fill(self._pick(_INTRO_PANEL), names=self.names_of(guests)))
        return [self._pick(_WELCOMES), intro]

    def question(self, guest: str, address: bool, single: bool = False) -> list[str]:
        """1-2 sentences ending in a question; `address` names the guest (panels)."""
        question = self.questions.deal()
        if not single and self.rng.random() < (0.5 if address else 0.4):
            lead = self.lead_ins.deal()
            if address and "{name}" not in lead:
                lead = "{name}, " + _lower_first(lead)
            return [self._fill(lead, guest), self._fill(question, guest)]
        if address:
            question = "{name}, " + _lower_first(question)
        return [self._fill(question, guest)]

    def answer(self, guest: str, count: int) -> list[str]:
        return [self._fill(self.answers.deal(), guest) for _ in range(count)]

    def cross_talk(self, guest: str, other: str, count: int) -> list[str]:
        first = self._fill(self.cross.deal(), guest, addressee=other)
        return [first] + self.answer(guest, count - 1)

    def reaction(self) -> str:
        return self.reactions.deal()

    def goodbye(self, guests: list[str]) -> list[str]:
        pair = _GOODBYES[int(self.rng.integers(len(_GOODBYES)))]
        return [self._fill(s, names=self.names_of(guests)) for s in pair]

    def backchannel(self) -> str:
        return self._pick(_BACKCHANNELS)


# ---------------------------------------------------------------------------------------------
# Sound placement.
# ---------------------------------------------------------------------------------------------

class _Mix:
    """The episode's one audio buffer; everything is added in place (no per-sound timeline copies)."""

    def __init__(self, duration_s: float, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.audio = np.zeros(int(round(duration_s * sample_rate)), np.float32)  # (samples,)

    def add(self, start_s: float, samples: np.ndarray, gain: float) -> tuple[float, float]:
        """Add `samples` at `start_s` (snapped to a sample); returns the (start_s, end_s) it covers."""
        start = int(round(start_s * self.sample_rate))
        n = max(min(len(samples), len(self.audio) - start), 0)
        self.audio[start:start + n] += samples[:n] * np.float32(gain)
        return start / self.sample_rate, (start + len(samples)) / self.sample_rate


@dataclass
class _Said:
    """One utterance planned for a speaker, before it is placed."""
    kind: str  # "speech" | "laugh"
    utterance: Utterance
    pause_after_s: float = 0.0


class _TalkShow:
    """Writes and mixes one show. Use: `_TalkShow(...).build()`."""

    def __init__(self, cast: list[CastMember], duration_s: float, rng: np.random.Generator,
                 synth: EspeakSynthesizer, style: WorldStyle = BROADCAST) -> None:
        hosts = [m for m in cast if m.role == "host"]
        guests = [m for m in cast if m.role == "guest"]
        if len(hosts) != 1 or not guests:
            raise ValueError("a talk show needs exactly one host and at least one guest")
        if duration_s < MIN_DURATION_S:
            raise ValueError(f"duration_s must be at least {MIN_DURATION_S} s")
        if synth.sample_rate != SAMPLE_RATE:
            raise ValueError(f"espeak-ng runs at {synth.sample_rate} Hz, expected {SAMPLE_RATE}")
        self.host, self.guests = hosts[0], guests
        self.members = {m.person_id: m for m in cast}
        self.duration_s = float(duration_s)
        self.rng, self.synth, self.style = rng, synth, style
        self.writer = _Writer(rng, [g.person_id for g in guests])
        self.mix = _Mix(self.duration_s, SAMPLE_RATE)
        self.gain = {m.person_id: float(rng.uniform(0.8, 1.0)) for m in cast}
        self.segments: list[SpeechSegment] = []
        self.turns: list[Turn] = []
        self.non_speech: list[NonSpeechSegment] = []
        self.busy_until = {m.person_id: 0.0 for m in cast}  # a person never overlaps themselves
        self.talk_start = 0.0  # set by build(): when the host may start talking
        self.last_turn_segment: SpeechSegment | None = None  # the previous turn's final segment
        self.n_overlaps = 0
        self.n_backchannels = 0
        self.n_laughs = 0

    # -- top level ------------------------------------------------------------------------------

    def build(self) -> AudioScript:
        talk_start = self.talk_start = self._intro()
        outro_s = float(self.rng.uniform(3.0, 5.0))
        music_start = self.duration_s - outro_s
        applause_lead = float(self.rng.uniform(0.8, 1.5))  # applause starts before the outro music
        goodbye = self._say_all(self.host, self.writer.goodbye([g.person_id for g in self.guests]),
                                pauses=(0.2, 0.5))
        goodbye_s = sum(s.utterance.duration_s + s.pause_after_s for s in goodbye)
        # The goodbye must end before the closing applause, which leads the outro music.
        talk_deadline = music_start - applause_lead - 0.3
        self._conversation(talk_start, talk_deadline - goodbye_s - 0.8)
        self._place_turn(self.host, goodbye, talk_deadline)
        self._outro(music_start, outro_s, applause_lead)
        return self._finish()

    def _intro(self) -> float:
        """Music from 0, applause over its end; returns when the host starts talking."""
        intro_s = float(self.rng.uniform(3.0, 6.0))
        self._add_non_speech("music", 0.0, music(intro_s, self.rng, SAMPLE_RATE), _MUSIC_PEAK)
        clap_start = intro_s - float(self.rng.uniform(1.0, 1.5))
        clap_s = float(self.rng.uniform(2.5, 3.5))
        self._add_non_speech("applause", clap_start, applause(clap_s, self.rng, SAMPLE_RATE),
                             _APPLAUSE_PEAK)
        return clap_start + clap_s - float(self.rng.uniform(0.3, 0.8))  # host talks over the tail

    def _outro(self, music_start: float, outro_s: float, applause_lead: float) -> None:
        last_talk = max(self.busy_until.values())
        clap_start = max(last_talk + float(self.rng.uniform(0.2, 0.4)), 0.0)
        clap_start = min(clap_start, music_start - applause_lead)
        clap_end = min(music_start + float(self.rng.uniform(1.0, 2.5)), self.duration_s)
        self._add_non_speech("applause", clap_start,
                             applause(clap_end - clap_start, self.rng, SAMPLE_RATE), _APPLAUSE_PEAK)
        n_music = len(self.mix.audio) - int(round(music_start * SAMPLE_RATE))  # ends exactly at the end
        self._add_non_speech("music", music_start, music(n_music / SAMPLE_RATE, self.rng, SAMPLE_RATE),
                             _MUSIC_PEAK)

    def _finish(self) -> AudioScript:
        audio = self.mix.audio
        peak = float(np.abs(audio).max())
        if peak > 0:
            audio *= np.float32(PEAK / peak)
        np.clip(audio, -PEAK, PEAK, out=audio)  # float rounding only
        self.segments.sort(key=lambda s: (s.start_s, s.end_s, s.person_id))
        self.non_speech.sort(key=lambda s: (s.start_s, s.kind))
        return AudioScript(duration_s=self.duration_s, sample_rate=SAMPLE_RATE,
                           segments=self.segments, non_speech=self.non_speech, turns=self.turns,
                           audio=audio)

    # -- conversation ---------------------------------------------------------------------------

    def _conversation(self, start_s: float, deadline_s: float) -> None:
        """Turns until the next one would not fit before `deadline_s`."""
        guests = [g.person_id for g in self.guests]
        panel = len(guests) > 1
        # The host only asks when an answer of a few seconds still fits.
        ask_deadline = deadline_s - 3.5
        opening = self.writer.opening(guests) + self.writer.question(guests[0], panel, single=True)
        if not self._place_turn(self.host, self._say_all(self.host, opening, (0.2, 0.5)),
                                ask_deadline, start_s=start_s):
            return
        addressed, next_guest = 0, 1 % len(guests)
        while True:
            guest = self.members[guests[addressed]]
            if not self._guest_turn(guest, deadline_s):
                return
            if panel and self.rng.random() < 0.35:  # another guest answers this guest
                other = [g for g in guests if g != guest.person_id][int(self.rng.integers(len(guests) - 1))]
                if not self._guest_turn(self.members[other], deadline_s, replying_to=guest.person_id):
                    return
            if panel:
                addressed, next_guest = next_guest, (next_guest + 1) % len(guests)
            if self.rng.random() < 0.3:  # a quick reaction before the next question
                sentences = [self.writer.reaction()] + self.writer.question(guests[addressed], panel,
                                                                             single=True)
            else:
                sentences = self.writer.question(guests[addressed], address=panel)
            if not self._place_turn(self.host, self._say_all(self.host, sentences[:2], (0.2, 0.5)),
                                    ask_deadline, keep_all=True):
                return

    def _guest_turn(self, guest: CastMember, deadline_s: float, replying_to: str | None = None) -> bool:
        count = int(self.rng.choice([1, 2, 3, 4], p=list(self.style.answer_sentence_weights)))
        if self.n_backchannels == 0 and len(self.turns) >= 2:
            count = max(count, 2)  # make room for the first backchannel
        if replying_to is not None:
            sentences = self.writer.cross_talk(guest.person_id, replying_to, min(count, 2))
        else:
            sentences = self.writer.answer(guest.person_id, count)
        said = self._say_all(guest, sentences, pauses=(0.3, 1.2))
        # Own laughter: occasionally after a sentence; guaranteed once early in the show.
        if self.rng.random() < 0.2 or self.n_laughs == 0:
            after = int(self.rng.integers(len(said)))
            laugh = laughter(self.synth, guest.voice, self.rng)
            said.insert(after + 1, _Said("laugh", laugh, pause_after_s=said[after].pause_after_s))
            said[after].pause_after_s = float(self.rng.uniform(0.1, 0.3))
        return self._place_turn(guest, said, deadline_s)

    def _say_all(self, member: CastMember, sentences: list[str], pauses: tuple[float, float]) -> list[_Said]:
        said = [_Said("speech", self.synth.synthesize(text, member.voice)) for text in sentences]
        for item in said[:-1]:
            item.pause_after_s = float(self.rng.uniform(*pauses))
        return said

    def _place_turn(self, member: CastMember, said: list[_Said], deadline_s: float,
                    start_s: float | None = None, keep_all: bool = False) -> bool:
        """Place one turn, dropping trailing sentences to fit unless `keep_all` (a question must keep
        its question); False when it does not fit."""
        pid = member.person_id
        overlaps = False
        if start_s is None:
            start_s, overlaps = self._next_start(pid)
        start_s = max(start_s, self.busy_until[pid] + 0.2)

        def length(items: list[_Said]) -> float:
            return sum(s.utterance.duration_s for s in items) + sum(s.pause_after_s for s in items[:-1])

        while said and start_s + length(said) > deadline_s:
            said = [] if keep_all else said[:-1]
        if not said or not any(s.kind == "speech" for s in said):
            return False
        index = len(self.turns)
        placed: list[SpeechSegment] = []
        t = start_s
        for i, item in enumerate(said):
            seg = self._add_speech(pid, t, item.utterance, item.kind, index,
                                   overlaps_previous=overlaps and i == 0)
            placed.append(seg)
            t = seg.end_s + item.pause_after_s
        self.n_overlaps += int(overlaps)
        self.turns.append(Turn(index, pid, placed[0].start_s, placed[-1].end_s, overlaps))
        self.last_turn_segment = placed[-1]
        self.busy_until[pid] = placed[-1].end_s
        self._listener_reactions(member, placed)
        return True

    def _next_start(self, pid: str) -> tuple[float, bool]:
        """Start of the next turn: a 0.2-0.8 s gap, or 0.3-1.0 s into the previous turn's end."""
        if not self.turns:  # nothing was said yet (a very short show): start when the talk may
            return self.talk_start, False
        previous = self.turns[-1]
        index = len(self.turns)
        due = self.n_overlaps < _OVERLAP_FRACTION * (index + 1)
        gap = float(self.rng.uniform(0.2, 0.8))
        overlap = float(self.rng.uniform(0.3, 1.0))
        if due or self.rng.random() < _OVERLAP_PROBABILITY:
            last = self.last_turn_segment  # talk over the end of it, not over the pause before it
            overlap = min(overlap, last.end_s - last.start_s - 0.2)
            start = previous.end_s - overlap
            if overlap >= 0.3 and start >= self.busy_until[pid] + 0.2:
                return start, True
        return previous.end_s + gap, False

    def _listener_reactions(self, speaker: CastMember, placed: list[SpeechSegment]) -> None:
        """Backchannels and laughs by the others during `speaker`'s turn, never in its last sentence."""
        own = [s for s in placed if s.kind == "speech"]
        if len(own) < 2:
            return
        # Listeners: in a one-guest show the other person; in panels mostly the host.
        others = [m for m in self.members.values() if m.person_id != speaker.person_id]
        window_end = own[-1].start_s - 0.1  # reactions finish before the turn's last sentence
        for seg in placed[:-1]:
            if seg.kind != "speech":
                continue
            pick_host = speaker.role == "guest" and self.rng.random() < 0.7
            listener = self.host if pick_host else others[int(self.rng.integers(len(others)))]
            roll = self.rng.random()
            force = self.n_backchannels == 0 and len(self.turns) >= 2
            if force or roll < (0.45 if speaker.role == "guest" else 0.15):
                # in the pause after this sentence (a cue), or over its end
                at = seg.end_s + float(self.rng.uniform(-0.4, 0.25))
                self._react(listener, "backchannel", at, window_end, seg.turn_index)
            elif roll < 0.55 and seg.end_s - seg.start_s > 2.0:  # over the middle of the sentence
                at = seg.start_s + float(self.rng.uniform(0.3, 0.7)) * (seg.end_s - seg.start_s)
                self._react(listener, "backchannel", at, window_end, seg.turn_index)
            elif roll < 0.62:
                self._react(listener, "laugh", seg.end_s + float(self.rng.uniform(0.0, 0.2)),
                            window_end, seg.turn_index)

    def _react(self, listener: CastMember, kind: str, at_s: float, window_end_s: float,
               turn_index: int) -> None:
        if kind == "laugh":
            utterance = laughter(self.synth, listener.voice, self.rng)
        else:
            utterance = self.synth.synthesize(self.writer.backchannel(), listener.voice)
        if at_s < self.busy_until[listener.person_id] + 0.2 or at_s + utterance.duration_s > window_end_s:
            return
        seg = self._add_speech(listener.person_id, at_s, utterance, kind, turn_index,
                               overlaps_previous=False, gain=_BACKCHANNEL_GAIN)
        self.busy_until[listener.person_id] = seg.end_s

    # -- primitives -----------------------------------------------------------------------------

    def _add_speech(self, pid: str, start_s: float, utterance: Utterance, kind: str, turn_index: int,
                    overlaps_previous: bool, gain: float = 1.0) -> SpeechSegment:
        peak = float(np.abs(utterance.audio).max()) if len(utterance.audio) else 0.0
        scale = _SPEECH_PEAK * self.gain[pid] * gain / peak if peak > 0 else 0.0
        start, end = self.mix.add(start_s, utterance.audio, scale)
        phonemes = [Phoneme(p.symbol, start + p.start_s, start + p.end_s) for p in utterance.phonemes]
        seg = SpeechSegment(pid, start, end, utterance.text, kind, phonemes, turn_index, overlaps_previous)
        self.segments.append(seg)
        if kind == "backchannel":
            self.n_backchannels += 1
        elif kind == "laugh":
            self.n_laughs += 1
        return seg

    def _add_non_speech(self, kind: str, start_s: float, samples: np.ndarray, peak: float) -> None:
        start, end = self.mix.add(start_s, samples, peak / max(float(np.abs(samples).max()), 1e-9))
        self.non_speech.append(NonSpeechSegment(kind, start, min(end, self.duration_s)))


def build_audio_script(cast: list[CastMember], duration_s: float, rng: np.random.Generator,
                       synth: EspeakSynthesizer, style: WorldStyle = BROADCAST) -> AudioScript:
    """One talk show's sound track and its ground truth (see the module docstring)."""
    return _TalkShow(cast, duration_s, rng, synth, style).build()
