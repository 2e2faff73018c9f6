"""The demo's employee directory: 200 made-up people and a generated portrait for each.

Names are fixed (a seeded shuffle), so URLs and keys are the same on every run; some have
non-ASCII letters and every key has a space, so the demo exercises key encoding end to end.
Portraits live in one folder per team (``employees/Engineering/Ada Berg.jpg``), so an identity
provider's claim (``team``) can become a scope (``demo:employees/{team}/*``).
Pillow is imported only inside ``portrait``.
"""

from __future__ import annotations

import colorsys
import io
import random
import unicodedata
from dataclasses import dataclass
from typing import Final

FIRST: Final = ("Ada", "Bruno", "Chiara", "Dmitri", "Elif", "Farah", "Gustav", "Hana", "Ines",
                "José", "Kwame", "Lena", "Mateo", "Nadia", "Oskar", "Priya", "Quentin", "Rosa",
                "Søren", "Tomás", "Uma", "Viktor", "Wen", "Yusuf", "Zoë")
LAST: Final = ("Abara", "Berg", "Costa", "Dubois", "Eriksen", "Fischer", "García", "Haddad",
               "Ito", "Jensen", "Kowalski", "Łukasik", "Moreau", "Nakamura", "Okafor", "Petrov",
               "Quinn", "Rossi", "Singh", "Tanaka", "Ueda", "Varga", "Weber", "Yilmaz", "Zhou")
TEAMS: Final = ("Engineering", "Finance", "People", "Sales", "Support", "Design", "Legal",
                "Operations")
FOLD: Final = str.maketrans({"Ł": "L", "Ø": "O", "ł": "l", "ø": "o"})
PORTRAIT_SIZE: Final = (480, 600)  # 4:5, like an ID photo; about 20 KB as JPEG
FACE: Final = "0.5,0.38"  # the centre of the head portrait() draws, in fractions of its size
NEW_HIRE_EVERY: Final = 25  # one person in 25 has no photo yet (a new hire)


@dataclass(frozen=True, slots=True)
class Person:
    name: str
    team: str
    key: str  # the object key in the demo bucket
    hue: float  # 0..1: the portrait's colours
    has_photo: bool = True  # False: a new hire, no portrait in the bucket (an initials avatar shows)

    @property
    def focus(self) -> str:
        """Where the face is, as a signed ``fp`` (the portrait's head: ``portrait`` draws it
        there), as a dashboard would store it per employee."""
        return FACE

    @property
    def initials(self) -> str:
        """ASCII initials (the portrait's font has no Ł): accents dropped, Ł and Ø folded."""
        folded = unicodedata.normalize("NFKD", self.name).translate(FOLD)
        return "".join(part[0] for part in folded.split()).encode("ascii", "ignore").decode()


def directory(count: int = 200, seed: int = 6) -> tuple[Person, ...]:
    """``count`` distinct people (at most 625), the same list on every call."""
    rng = random.Random(seed)  # noqa: S311 - made-up names, not secrets
    names = [f"{first} {last}" for first in FIRST for last in LAST]
    rng.shuffle(names)
    if count > len(names):
        raise ValueError(f"at most {len(names)} people")
    people = []
    for index, name in enumerate(sorted(names[:count])):
        team = rng.choice(TEAMS)
        people.append(Person(name=name, team=team, key=person_key(team, name), hue=rng.random(),
                             has_photo=index % NEW_HIRE_EVERY != NEW_HIRE_EVERY // 2))
    return tuple(people)


def person_key(team: str, name: str) -> str:
    """``employees/TEAM/NAME.jpg``: one folder per team, so a scope can name a team."""
    return f"employees/{team}/{name}.jpg"


def portrait(person: Person) -> bytes:
    """A JPEG: a head-and-shoulders silhouette on a coloured background, with the initials."""
    from PIL import Image, ImageDraw, ImageFont

    def rgb(lightness: float, saturation: float) -> tuple[int, int, int]:
        red, green, blue = colorsys.hls_to_rgb(person.hue, lightness, saturation)
        return round(red * 255), round(green * 255), round(blue * 255)

    width, height = PORTRAIT_SIZE
    image = Image.linear_gradient("L").resize(PORTRAIT_SIZE)
    image = Image.merge("RGB", [band.point(lambda v, c=c: c * (160 + v // 3) // 255)
                                for band, c in zip((image,) * 3, rgb(0.55, 0.45), strict=True)])
    draw = ImageDraw.Draw(image)
    skin = rgb(0.8, 0.25)
    draw.ellipse((width * 0.12, height * 0.62, width * 0.88, height * 1.25), fill=rgb(0.3, 0.5))
    draw.ellipse((width * 0.3, height * 0.18, width * 0.7, height * 0.58), fill=skin)
    font = ImageFont.load_default(size=64)
    draw.text((width / 2, height * 0.82), person.initials, fill=(255, 255, 255), font=font, anchor="mm")
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()
