"""What was said in a recorded call: a Polish dialogue, its timing and a summary.

The dialogue is the simulator's stand-in for a speech-to-text result. It is picked from a
small set of topics that fit the call (customer service in Kolejka1, technical support
in Kolejka2, colleagues, suppliers, a council meeting), with details (invoice numbers,
amounts, days) drawn from the seed. The same timeline drives the synthetic audio, so the
transcript's `[mm:ss]` marks match where each voice speaks in the WAV file.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from cloudpbx.adapters.simulator.sim import CallKind, Speaker, Talk

CHARS_PER_SECOND = 14.0
"""Speaking pace of the timeline: about the pace of conversational Polish."""


@dataclass(frozen=True, slots=True)
class Topic:
    """Lines as (0 = host / 1 = guest, template) and a summary template."""

    lines: tuple[tuple[int, str], ...]
    summary: str


@dataclass(frozen=True, slots=True)
class Line:
    """One utterance placed on the recording's timeline (seconds from its start)."""

    start: float
    end: float
    speaker: Speaker
    label: str
    text: str


@dataclass(frozen=True, slots=True)
class Dialogue:
    """The whole conversation of a call, and what it was about."""

    lines: tuple[tuple[int, str], ...]
    summary: str
    host: Speaker
    guest: Speaker
    guest_label: str

    def timeline(self, seconds: float) -> list[Line]:
        """The utterances that start within the first `seconds` of the recording."""
        timed: list[Line] = []
        at = 0.6
        for who, text in self.lines:
            if at >= seconds:
                break
            length = len(text) / CHARS_PER_SECOND
            if who == 0:
                speaker, label = self.host, self.host.name
            else:
                speaker, label = self.guest, self.guest_label
            timed.append(Line(at, min(at + length, seconds), speaker, label, text))
            at += length + 0.4 + (len(text) % 5) * 0.12
        return timed

    def transcript(self, seconds: float) -> str:
        """`[mm:ss] Name: text` lines of what the recording holds."""
        return "\n".join(
            f"[{int(line.start) // 60:02d}:{int(line.start) % 60:02d}] {line.label}: {line.text}"
            for line in self.timeline(seconds)
        )


def write_dialogue(talk: Talk, rng: random.Random) -> Dialogue:
    """A dialogue that fits the call, with details drawn from `rng`."""
    topic = rng.choice(_topics(talk))
    slots = {
        "host": talk.host.name,
        "host_first": talk.host.name.split()[0],
        "guest": talk.guest.name,
        "client": rng.choice(_CLIENTS),
        "room": talk.topic,
        "invoice": f"FV/{rng.randrange(1, 1000):04d}/{rng.randrange(1, 13):02d}",
        "amount": f"{rng.randrange(120, 9000):,} zł {rng.randrange(100):02d} gr".replace(",", " "),
        "order": f"ZAM-{rng.randrange(10_000, 99_999)}",
        "ticket": f"ZG-{rng.randrange(1_000, 9_999)}",
        "day": rng.choice(_DAYS),
        "hour": f"{rng.randrange(8, 17)}:{rng.choice(('00', '15', '30', '45'))}",
        "product": rng.choice(_PRODUCTS),
        "qty": str(rng.choice((5, 10, 12, 20, 25, 50, 100))),
    }
    lines = tuple((who, text.format(**slots)) for who, text in topic.lines)
    return Dialogue(lines, topic.summary.format(**slots), talk.host, talk.guest, _label(talk))


def _label(talk: Talk) -> str:
    if not talk.guest.external:
        return talk.guest.name
    return "Klient" if talk.kind is CallKind.QUEUE else "Rozmówca"


def _topics(talk: Talk) -> tuple[Topic, ...]:
    if talk.kind is CallKind.QUEUE:
        return _SUPPORT if talk.topic == "Kolejka2" else _SERVICE
    return _BY_KIND[talk.kind]


_CLIENTS = (
    "Marek Jankowski",
    "Beata Mazur",
    "Paweł Krawczyk",
    "Joanna Kaczmarek",
    "Grzegorz Piotrowski",
    "Monika Grabowska",
    "Adam Pawłowski",
    "Barbara Michalska",
)
_DAYS = ("w poniedziałek", "we wtorek", "w środę", "w czwartek", "w piątek")
_PRODUCTS = ("drukarka laserowa", "router", "tonery", "monitory", "krzesła biurowe", "papier A4")

_SERVICE = (
    Topic(
        (
            (0, "Dzień dobry, obsługa klienta, {host_first} przy telefonie. W czym mogę pomóc?"),
            (1, "Dzień dobry, {client}. Dzwonię w sprawie faktury {invoice}, nie dotarła do nas."),
            (0, "Już sprawdzam. Faktura {invoice} na kwotę {amount} została wystawiona."),
            (1, "Czy mogę prosić o duplikat na adres e-mail?"),
            (0, "Oczywiście, wyślę duplikat na adres przypisany do konta jeszcze dzisiaj."),
            (1, "Dziękuję bardzo, to wszystko."),
            (0, "Dziękuję za telefon, do usłyszenia."),
        ),
        "Klient ({client}) prosi o duplikat faktury {invoice} na {amount}; "
        "{host} wyśle go e-mailem jeszcze dziś.",
    ),
    Topic(
        (
            (0, "Dzień dobry, obsługa klienta, {host_first}, słucham."),
            (1, "Dzień dobry, chciałbym zapytać o zamówienie {order}. Kiedy będzie dostawa?"),
            (0, "Zamówienie {order} zostało wysłane wczoraj, kurier dostarczy je {day}."),
            (1, "A czy mogę dostać numer przesyłki?"),
            (0, "Tak, numer przesyłki wyślę SMS-em na numer, z którego Pan dzwoni."),
            (1, "Świetnie, dziękuję."),
            (0, "Proszę bardzo, miłego dnia."),
        ),
        "Klient ({client}) pyta o zamówienie {order}; {host} potwierdza wysyłkę, "
        "dostawa {day}, numer przesyłki wysłany SMS-em.",
    ),
    Topic(
        (
            (0, "Obsługa klienta, {host_first}, dzień dobry."),
            (
                1,
                "Dzień dobry, chcę złożyć reklamację. Z zamówienia {order} przyszła uszkodzona "
                "{product}.",
            ),
            (0, "Bardzo mi przykro. Przyjmuję zgłoszenie, numer reklamacji to {ticket}."),
            (1, "Jak długo potrwa rozpatrzenie?"),
            (0, "Odpowiemy w ciągu czternastu dni, kurier odbierze towar {day}."),
            (1, "Dobrze, będę czekać. Dziękuję."),
        ),
        "Reklamacja {ticket}: klient ({client}) otrzymał uszkodzony towar ({product}) z "
        "zamówienia {order}; odbiór kurierem {day}, odpowiedź w ciągu 14 dni.",
    ),
    Topic(
        (
            (0, "Dzień dobry, dział sprzedaży, {host_first} przy telefonie."),
            (1, "Dzień dobry, prosimy o ofertę: {qty} sztuk, {product}."),
            (0, "Przygotuję wycenę z rabatem dla stałego klienta i wyślę ją {day}."),
            (1, "A jaki jest termin realizacji?"),
            (0, "Zwykle około tygodnia od potwierdzenia zamówienia."),
            (1, "Dobrze, czekam na ofertę. Do widzenia."),
        ),
        "Zapytanie ofertowe: {qty} szt. ({product}); {host} wyśle wycenę {day}, "
        "realizacja ok. tygodnia.",
    ),
)

_SUPPORT = (
    Topic(
        (
            (0, "Wsparcie techniczne, {host_first}, dzień dobry. Jaki jest problem?"),
            (1, "Dzień dobry, od rana nie działa nam internet w biurze."),
            (0, "Widzę, że router nie odpowiada. Zrestartuję go zdalnie, proszę chwilę poczekać."),
            (1, "Dobrze, czekam."),
            (0, "Router już działa. Czy strony się otwierają?"),
            (1, "Tak, wszystko działa. Dziękuję!"),
            (0, "Zamykam zgłoszenie {ticket}. Do usłyszenia."),
        ),
        "Zgłoszenie {ticket}: brak internetu u klienta; {host} zdalnie zrestartował router, "
        "usługa przywrócona, zgłoszenie zamknięte.",
    ),
    Topic(
        (
            (0, "Wsparcie techniczne, dzień dobry, {host_first} przy telefonie."),
            (1, "Dzień dobry, telefon na biurku pokazuje, że nie jest zarejestrowany."),
            (0, "Sprawdzę konto. Hasło SIP zostało zmienione, ustawię nowe i wyślę konfigurację."),
            (1, "Telefon właśnie się uruchomił ponownie."),
            (0, "Widzę go już jako zarejestrowany. Proszę wykonać połączenie testowe."),
            (1, "Działa, słyszę sygnał. Dziękuję."),
        ),
        "Telefon klienta nie rejestrował się w centrali; {host} ustawił nowe hasło SIP, "
        "rejestracja potwierdzona połączeniem testowym (zgłoszenie {ticket}).",
    ),
    Topic(
        (
            (0, "Pomoc techniczna, {host_first}, słucham."),
            (1, "Dzień dobry, nie mogę wysłać poczty, program pokazuje błąd serwera."),
            (
                0,
                "Proszę sprawdzić port serwera wychodzącego, powinien być pięćset osiemdziesiąt "
                "siedem.",
            ),
            (1, "Był ustawiony inny. Zmieniłem i wiadomość wyszła."),
            (0, "Świetnie, zapisuję to w zgłoszeniu {ticket}."),
        ),
        "Klient nie mógł wysyłać poczty; {host} wskazał błędny port SMTP (poprawny 587), "
        "problem rozwiązany (zgłoszenie {ticket}).",
    ),
)

_BY_KIND = {
    CallKind.INTERNAL: (
        Topic(
            (
                (0, "Cześć, tu {host_first}. Masz chwilę?"),
                (1, "Jasne, o co chodzi?"),
                (0, "Musimy ustalić termin spotkania zespołu. Pasuje ci {day} o {hour}?"),
                (1, "Tak, pasuje. Zarezerwuję salę konferencyjną."),
                (0, "Dzięki, wyślę zaproszenie wszystkim."),
            ),
            "{host} i {guest}: spotkanie zespołu {day} o {hour}; sala zarezerwowana, "
            "zaproszenia wyśle {host}.",
        ),
        Topic(
            (
                (0, "Cześć, dzwonię w sprawie raportu sprzedaży za poprzedni miesiąc."),
                (1, "Raport jest prawie gotowy, brakuje danych z jednego regionu."),
                (0, "Potrzebuję go na zarząd. Dasz radę do {day}?"),
                (1, "Tak, wyślę go {day} rano."),
            ),
            "{host} i {guest}: raport sprzedaży za poprzedni miesiąc będzie gotowy {day} rano.",
        ),
        Topic(
            (
                (0, "Hej, przekazuję ci sprawę klienta {client}, zamówienie {order}."),
                (1, "Dobrze, co trzeba zrobić?"),
                (0, "Klient czeka na korektę faktury {invoice}. Wszystko jest w systemie."),
                (1, "Zajmę się tym dzisiaj i dam znać klientowi."),
            ),
            "{host} przekazuje sprawę klienta {client} (zamówienie {order}, korekta faktury "
            "{invoice}); {guest} zajmie się nią dzisiaj.",
        ),
    ),
    CallKind.INBOUND: (
        Topic(
            (
                (0, "{host}, dzień dobry."),
                (1, "Dzień dobry, tu {client}. Chciałbym umówić spotkanie w sprawie współpracy."),
                (0, "Bardzo chętnie. Czy pasuje {day} o {hour}?"),
                (1, "Tak, będę w biurze o tej godzinie."),
                (0, "Zapisuję. Do zobaczenia."),
            ),
            "Klient ({client}) umawia się z {host} na spotkanie {day} o {hour}.",
        ),
        Topic(
            (
                (0, "{host}, słucham."),
                (1, "Dzień dobry, dzwonię z hurtowni. Dostawa do zamówienia {order} się opóźni."),
                (0, "Rozumiem. Jaki jest nowy termin?"),
                (1, "Towar wyślemy {day}, przepraszamy za kłopot."),
                (0, "Dobrze, poinformuję dział sprzedaży."),
            ),
            "Dostawca informuje o opóźnieniu dostawy do zamówienia {order}; nowy termin "
            "wysyłki {day}; {host} przekaże informację do sprzedaży.",
        ),
    ),
    CallKind.OUTBOUND: (
        Topic(
            (
                (1, "Dzień dobry, hurtownia biurowa, słucham."),
                (0, "Dzień dobry, {host} z tej strony. Chcę zamówić {qty} sztuk: {product}."),
                (1, "Mamy na stanie. Dostawa {day}, faktura jak zwykle przelewem."),
                (0, "Świetnie, proszę o potwierdzenie e-mailem."),
            ),
            "{host} zamawia {qty} szt. ({product}); dostawa {day}, potwierdzenie e-mailem.",
        ),
        Topic(
            (
                (1, "Halo, dzień dobry."),
                (0, "Dzień dobry, {host}. Dzwonię w sprawie faktury {invoice} na {amount}."),
                (0, "Termin płatności minął w zeszłym tygodniu."),
                (1, "Przepraszam, przelew wyjdzie {day}."),
                (0, "Dziękuję, odnotuję to w systemie."),
            ),
            "Przypomnienie o płatności: faktura {invoice} na {amount} po terminie; kontrahent "
            "zapłaci {day}.",
        ),
    ),
    CallKind.CONFERENCE: (
        Topic(
            (
                (1, "Witam wszystkich na posiedzeniu. Pierwszy punkt to budżet na przyszły rok."),
                (0, "Dzień dobry, {host}. Projekt budżetu rozesłałem wczoraj."),
                (1, "Czy są uwagi do projektu?"),
                (0, "Proponuję zwiększyć wydatki na szkolenia o dziesięć procent."),
                (1, "Przyjmujemy. Kolejne posiedzenie {day} o {hour}."),
            ),
            "Posiedzenie {room}: omówiono projekt budżetu, przyjęto wniosek o zwiększenie "
            "wydatków na szkolenia; kolejne posiedzenie {day} o {hour}.",
        ),
        Topic(
            (
                (1, "Zaczynamy. Proszę o krótki status projektów."),
                (0, "Tu {host}. Wdrożenie nowej centrali idzie zgodnie z planem."),
                (1, "Czy są jakieś ryzyka?"),
                (0, "Jedynie dostawa telefonów, ale hurtownia potwierdziła termin."),
                (1, "Dziękuję, widzimy się {day}."),
            ),
            "Posiedzenie {room}: status projektów, wdrożenie centrali zgodnie z planem; "
            "następne spotkanie {day}.",
        ),
    ),
}
