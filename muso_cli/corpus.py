"""A byte-level text corpus that every machine running muso has offline: the source of the Python standard library.

The corpus is fixed: the 115 top-level modules of CPython 3.11's standard library listed in FILES, byte for byte
(each with its size and the first 16 hex digits of its SHA-256), 2,231,810 bytes in all. They are the modules
that are identical in CPython 3.11.2 (Debian 12's /usr/lib/python3.11, package libpython3.11-stdlib) and 3.11.7,
so any CPython 3.11 is likely to hold them unchanged. The files are read from ``data.root`` when given, else from
the running interpreter's standard library, else /usr/lib/python3.11; a file that differs from its pinned
checksum is refused (the error says how to get the reference), unless ``data.verify=false``.

Text: the files concatenated in FILES order (sorted by name). Split: the training text is the files up to
textwrap.py (2,013,740 bytes), the test text textwrap.py onward (218,070 bytes: 14 modules), so no module is in
both. Tokens are bytes (vocabulary 256). A split of L bytes gives (L − 1) // T sequences of T = ``data.context``
tokens, x = bytes [iT, iT + T) and y = bytes [iT + 1, iT + T + 1) (the next byte at each position).
``data.corpus_bytes`` keeps the first that many bytes of the training text (the corpus size); the test text is
always whole (``data.n_test`` takes its first sequences). The loss per token of this data is in nats per byte;
divided by ln 2 it is bits per byte.
"""
from __future__ import annotations

import hashlib
import sysconfig
from pathlib import Path

import torch
from torch import Tensor

from .errors import UsageError

VOCAB = 256                    # byte-level tokens
DEBIAN_STDLIB = Path("/usr/lib/python3.11")
TEST_FROM = "textwrap.py"      # the first file of the test split

# (file name, size in bytes, first 16 hex digits of its SHA-256), in corpus order.
FILES: tuple[tuple[str, int, str], ...] = (
    ("__future__.py", 5218, "981d4c398849f9eb"), ("__hello__.py", 227, "a8ce70b199497950"),
    ("_aix_support.py", 3389, "78790b6fd80cd62f"), ("_bootsubprocess.py", 2675, "dd8afc4a86131491"),
    ("_collections_abc.py", 30193, "ec646ef7e27aae26"), ("_compat_pickle.py", 8761, "12c8356a3d40bd0a"),
    ("_compression.py", 5681, "3ad5d60627477a60"), ("_markupbase.py", 14653, "cb14dd6f2e2439eb"),
    ("_osx_support.py", 21787, "6a99e8c9ff67c891"), ("_py_abc.py", 6189, "f9c6fe3dd9b51bd7"),
    ("_pydecimal.py", 229202, "14cf1bf7ead78a0b"), ("_pyio.py", 94036, "f22f010af7d96fa7"),
    ("_sitebuiltins.py", 3128, "b9388bc1d6d12ed6"), ("_strptime.py", 25277, "065e6597af214f79"),
    ("_threading_local.py", 7220, "e1bf3dae66d0bfa6"), ("_weakrefset.py", 5893, "91895a451d06e9f5"),
    ("aifc.py", 34211, "e027e8a33567890a"), ("antigravity.py", 500, "8a5ee63e1b79ba27"),
    ("asynchat.py", 11570, "63fe1a2fd717d09a"), ("asyncore.py", 20310, "0dc49691ced7a3d7"),
    ("bisect.py", 3135, "e5b2ff166f48a06e"), ("bz2.py", 11847, "76ab3252924e71e8"),
    ("cgi.py", 34420, "f132666784c29a3e"), ("cgitb.py", 12421, "401f791a56480b5b"),
    ("chunk.py", 5500, "4817eb94eeb8835c"), ("cmd.py", 14873, "fb82a8c4e44e5b55"),
    ("code.py", 10622, "266841655656d5b2"), ("compileall.py", 20252, "859a2743805b0570"),
    ("contextvars.py", 129, "5ed260be8d1f4fe9"), ("copy.py", 8681, "27dcfc53a4b9d4fb"),
    ("copyreg.py", 7677, "5499e1be7ba52d47"), ("crypt.py", 3913, "208df2ff33c19056"),
    ("csv.py", 16030, "6c68a5186e3b85e6"), ("decimal.py", 320, "000c00bad31d126b"),
    ("difflib.py", 83308, "0c6afc23568d55b3"), ("filecmp.py", 10178, "178f19895fdd43d5"),
    ("fnmatch.py", 5999, "6683da36e47af523"), ("fractions.py", 28667, "b11e850e354808b8"),
    ("ftplib.py", 35496, "672300f448249dfd"), ("functools.py", 38413, "6d80018a3fa9fed4"),
    ("genericpath.py", 4975, "9d58ad64056a89f1"), ("getopt.py", 7489, "efafb88c7c978e96"),
    ("getpass.py", 5990, "e74fd445337ff503"), ("glob.py", 8681, "fa579f8a50a66313"),
    ("graphlib.py", 9656, "7bd338c5a475d110"), ("gzip.py", 24074, "8e0a7f850ef481fe"),
    ("hashlib.py", 11765, "e2bffb462e4d43e6"), ("heapq.py", 23024, "6d43277e5c76fc0f"),
    ("hmac.py", 7717, "a4790b3cfd1b5887"), ("imaplib.py", 54865, "dc3be105fb6b3e28"),
    ("imghdr.py", 3952, "cd784fa55c7e2859"), ("imp.py", 10606, "3c64d27e656df0ba"),
    ("keyword.py", 1061, "afbe73afb68d32fa"), ("linecache.py", 5690, "e814839fc75010db"),
    ("lzma.py", 13277, "58fb9d2fdc8a8af7"), ("mailbox.py", 78794, "e695a76d936f009d"),
    ("mailcap.py", 9369, "b85eccb4567c5c76"), ("mimetypes.py", 22791, "240e2278866203e6"),
    ("modulefinder.py", 23699, "e07ab000c3698a75"), ("netrc.py", 6929, "6394e8e650d04c26"),
    ("nntplib.py", 41087, "6a76a94b951b273a"), ("nturl2path.py", 2887, "980982ba66cc403d"),
    ("numbers.py", 10348, "6d70991643a109e9"), ("opcode.py", 10447, "e6fc6dc49ced415d"),
    ("operator.py", 10965, "b2af20f67667203c"), ("optparse.py", 60369, "07d224301cba312f"),
    ("os.py", 39504, "021bfb21a96fdaac"), ("pickle.py", 64949, "f29792b7bad19b9b"),
    ("pickletools.py", 93486, "bcc8d00ebadd684a"), ("pipes.py", 8978, "153f2d249d954b55"),
    ("poplib.py", 15198, "7b341e6adb4e4341"), ("posixpath.py", 17013, "115bb3d2051318ee"),
    ("pprint.py", 24489, "0b67dbc8af449d8c"), ("pstats.py", 29356, "d62d1e6a626ebd92"),
    ("pyclbr.py", 11396, "e8ca09333701ba41"), ("queue.py", 11496, "f6c37fc37cd74409"),
    ("random.py", 32162, "b931a2d452db89ab"), ("reprlib.py", 5437, "264433cc232332db"),
    ("rlcompleter.py", 7827, "fee9ad9c55529be4"), ("runpy.py", 13159, "f7af4206d8cbb27f"),
    ("sched.py", 6351, "edfb309483d7cb05"), ("secrets.py", 2028, "86893f2e4d33e8d0"),
    ("shelve.py", 8560, "b978c6f0ffa901b0"), ("shlex.py", 13501, "42ab6060f316e121"),
    ("signal.py", 2438, "6ae9e49fe09b607b"), ("smtpd.py", 31162, "ef3420607dc3f2d9"),
    ("smtplib.py", 45418, "b154e27998d0ef0b"), ("sndhdr.py", 7448, "d1cb49f6545ef831"),
    ("socketserver.py", 27586, "a1402df8627949d0"), ("sre_compile.py", 231, "f7fd87f8ac9dad7d"),
    ("sre_constants.py", 232, "87013dc0b349c2c0"), ("sre_parse.py", 229, "c492913453230608"),
    ("stat.py", 5485, "052af0327eae6941"), ("statistics.py", 47705, "889a066f1b8063e7"),
    ("string.py", 11786, "24aeae1f0526250f"), ("stringprep.py", 12917, "60b6c83581093029"),
    ("struct.py", 257, "9c231f9497caf513"), ("sunau.py", 18480, "d1ed39eafff3b238"),
    ("symtable.py", 10368, "ce90d8e945776674"), ("tabnanny.py", 11299, "73bc1829f1063472"),
    ("telnetlib.py", 23301, "1984cebfb5018075"), ("textwrap.py", 19718, "62867e40cdea6669"),
    ("this.py", 1003, "481d0cb3de511eae"), ("token.py", 2386, "2cabb6a81cafa84b"),
    ("tokenize.py", 26336, "79aa94ebe1761811"), ("tracemalloc.py", 18047, "c2cc84a05b824df7"),
    ("tty.py", 879, "066a541e6d38ead9"), ("types.py", 10067, "0c08fbb650c37535"),
    ("uuid.py", 27597, "e936b632e7b14cbd"), ("warnings.py", 21025, "3c36ff80a66718e3"),
    ("weakref.py", 21513, "56f8d313fb74019e"), ("webbrowser.py", 25090, "97ce2327720d3e55"),
    ("xdrlib.py", 5977, "b881d9c59e381f0f"), ("zipapp.py", 7535, "776078e89fd7dadb"),
    ("zipimport.py", 30897, "e84b98dd13d3a8ae"),
)
TRAIN_BYTES = sum(size for name, size, _ in FILES if name < TEST_FROM)


def _roots(root) -> list[Path]:
    if root:
        return [Path(str(root)).expanduser()]
    return list(dict.fromkeys([Path(sysconfig.get_paths()["stdlib"]), DEBIAN_STDLIB]))


def _mismatch(folder: Path) -> str | None:
    """Why ``folder`` does not hold the pinned corpus (a missing or changed file), or None when it does."""
    for name, size, digest in FILES:
        path = folder / name
        if not path.is_file():
            return f"{path} is missing"
        data = path.read_bytes()
        if len(data) != size or hashlib.sha256(data).hexdigest()[:16] != digest:
            return f"{path} differs from the pinned file ({len(data)} bytes, expected {size})"
    return None


def locate(root=None, verify: bool = True) -> Path:
    """The folder to read the corpus from: the first candidate that holds the pinned files (with ``verify``
    false: the first that holds files of those names). Raises UsageError naming data.root."""
    reasons = []
    for folder in _roots(root):
        reason = _mismatch(folder)
        if reason is None or (not verify and all((folder / name).is_file() for name, _, _ in FILES)):
            return folder
        reasons.append(reason)
    where = f"data.root={root}" if root else "this interpreter's standard library and /usr/lib/python3.11"
    raise UsageError("data.root", f"the pinned Python standard-library corpus is not in {where}: "
                     f"{'; '.join(reasons)}.",
                     "install a CPython 3.11 (Debian 12: `apt-get install libpython3.11-stdlib` fills "
                     "/usr/lib/python3.11) and pass data.root=<its Lib folder>, or data.verify=false to train on "
                     "this machine's copy (the numbers then differ from docs/results.md).")


def read(folder: Path) -> tuple[bytes, bytes]:
    """(training text, test text) of the corpus in ``folder``."""
    train = b"".join((folder / name).read_bytes() for name, _, _ in FILES if name < TEST_FROM)
    test = b"".join((folder / name).read_bytes() for name, _, _ in FILES if name >= TEST_FROM)
    return train, test


def sequences(text: bytes, context: int) -> tuple[Tensor, Tensor]:
    """(x, y) int64 [(len − 1) // context, context]: consecutive windows of ``text`` and the next byte of each
    position."""
    tokens = torch.frombuffer(bytearray(text), dtype=torch.uint8).long()
    n = (len(tokens) - 1) // context
    x = tokens[:n * context].view(n, context)
    y = tokens[1:n * context + 1].view(n, context)
    return x, y


def digest(text: bytes) -> str:
    """The first 12 hex digits of the SHA-256 of ``text`` (recorded as the data source)."""
    return hashlib.sha256(text).hexdigest()[:12]
