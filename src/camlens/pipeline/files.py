"""Writing files: the output folder (checked, created, locked against a second run), the file names an
image gets (shortened to fit the file system), atomic writes, one image's encoded pictures and maps file,
a batch's maps file, and staged writes (all files or none)."""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from camlens.errors import UsageError
from camlens.pipeline.items import GRADIENT_METHODS, ImageResult, RunOptions

if TYPE_CHECKING:
    import numpy as np


def planned_files(stem: str, network: str, options: RunOptions) -> list[str]:
    """The picture (and map) file names one image will get."""
    from camlens.render import picture_kinds

    if not options.pictures:
        return []
    names = [
        f"{stem}-{network}-{suffix}.{options.image_format}"
        for m in options.methods
        for suffix, _ in picture_kinds(m, m not in GRADIENT_METHODS)
    ]
    if options.save_maps:
        names.append(f"{stem}-{network}-maps.npz")
    return names


PARTIAL_SUFFIX = ".part"


NAME_MAX = 255  # bytes in a file name (ext4, XFS, APFS, NTFS)


def fit_stem(
    stem: str, network: str, options: RunOptions, planned: Callable[[str, str, RunOptions], list[str]] | None = None
) -> str:
    """``stem``, or where its longest output name would pass :data:`NAME_MAX` bytes, its start and a hash of it
    (``<start>~<8 hex>``): the same input always gets the same names, so a resumed run finds its files.

    Example:
        >>> fit_stem("a" * 240, "resnet18", RunOptions(methods=("gradcam",)))[-9:]
        '~c056f00f'
    """
    planned = planned or planned_files  # a task's own (camlens.pipeline.task)
    longest = max((len(name.encode()) for name in planned(stem, network, options)), default=0)
    if longest <= NAME_MAX:
        return stem
    raw = stem.encode()
    keep = raw[: max(0, len(raw) - (longest - NAME_MAX) - 9)].decode("utf-8", "ignore")
    return f"{keep}~{hashlib.sha1(raw).hexdigest()[:8]}"


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary name in the same folder and rename: readers never see half a file.

    The temporary is ``.camlens-<random>.part`` (short whatever the name: it always fits the folder's name
    limit); one left by a killed process is removed by the next run. The file gets the mode any new file
    gets (0666 less the umask), not mkstemp's 0600.
    """
    fd, tmp = tempfile.mkstemp(prefix=".camlens-", suffix=PARTIAL_SUFFIX, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
    finally:
        os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@functools.lru_cache(maxsize=1)
def _umask() -> int:
    """The process's umask (read from /proc where possible: setting it to read it races with other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_bytes(path: Path, data: bytes) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            handle.write(data)

    atomic_write(path, write)


def caption(result: ImageResult) -> str:
    """The label an annotated picture carries: class name and probability (or the class number)."""
    if result.class_id is None:
        return "custom target"
    name = result.class_name or f"class {result.class_id}"
    probability = result.probability
    if probability is None and result.probabilities is not None:
        probability = float(result.probabilities[result.class_id])
    return name if probability is None else f"{name} {probability:.2f}"


def encode_image_files(result: ImageResult, network: str, options: RunOptions) -> dict[str, bytes]:
    """One image's pictures (and its maps file with ``save_maps``), encoded: file name -> bytes."""
    from camlens.pipeline.maps import image_file_arrays, npz_bytes
    from camlens.render import pictures

    assert result.rgb is not None
    blobs: dict[str, bytes] = {}
    cap = caption(result) if options.annotate else None
    fmt = "PNG" if options.image_format == "png" else "JPEG"
    for suffix, picture in pictures(result.rgb, result.maps, cap, options.colormap).items():
        blobs[f"{result.stem}-{network}-{suffix}.{options.image_format}"] = _encode(picture, fmt)
    if options.save_maps:
        assert result.compact is not None
        arrays = image_file_arrays(result.compact, result.stem, result.class_id, result.score)
        blobs[f"{result.stem}-{network}-maps.npz"] = npz_bytes(arrays)
    return blobs


def write_image_files(result: ImageResult, folder: Path, network: str, options: RunOptions) -> list[str]:
    """Write one image's pictures (and maps) atomically (encoded here unless ``result.blobs`` has them)."""
    blobs = result.blobs or encode_image_files(result, network, options)
    for name, data in blobs.items():
        write_bytes(folder / name, data)
    return list(blobs)


def _encode(picture: np.ndarray, fmt: str) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    image = Image.fromarray(picture)
    if fmt == "JPEG":
        image.save(buffer, format="JPEG", quality=92)
    else:
        image.save(buffer, format="PNG")
    return buffer.getvalue()


def batch_maps_file(results: list[ImageResult], network: str, index: int) -> tuple[str, bytes]:
    """``--no-pictures``: the name and bytes of the batch's ``maps-<network>-<index>.npz`` (compact maps)."""
    from camlens.pipeline.maps import batch_file_arrays, npz_bytes

    arrays = batch_file_arrays([(r.stem, r.compact) for r in results if r.compact is not None])
    return f"maps-{network}-{index:06d}.npz", npz_bytes(arrays)


def write_batch_maps(results: list[ImageResult], folder: Path, network: str, index: int) -> str:
    """``--no-pictures``: write the batch's compact maps in one ``maps-<network>-<index>.npz`` (read it with
    :func:`camlens.pipeline.maps.load_maps`); returns its name."""
    name, data = batch_maps_file(results, network, index)
    write_bytes(folder / name, data)
    return name


def next_map_index(folder: Path, network: str) -> int:
    """The first ``maps-<network>-<index>.npz`` index not used yet (a resumed run never replaces a batch file)."""
    prefix = f"maps-{network}-"
    used = [-1]
    if folder.is_dir():
        for entry in os.scandir(folder):
            if entry.name.startswith(prefix) and entry.name.endswith(".npz"):
                number = entry.name[len(prefix) : -len(".npz")]
                if number.isdigit():
                    used.append(int(number))
    return max(used) + 1


def check_output_dir(path: str | os.PathLike) -> Path:
    """The output folder, checked writable (it may not exist yet), or a :class:`UsageError`."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UsageError(f"output dir {out} is a file")
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"output dir {out} cannot be written ({existing} is not a writable folder)")
    return out


def make_dir(out: Path) -> bool:
    """Create the output folder (and say so); a folder that cannot be made is the user's input error."""
    if out.is_dir():
        return False
    try:
        out.mkdir(parents=True)
    except FileExistsError:
        if out.is_dir():  # another run made it between the check and here: not ours to remove
            return False
        raise UsageError(f"output dir {out} cannot be written (a file of that name exists)") from None
    except OSError as error:
        raise UsageError(f"output dir {out} cannot be written ({error.strerror or error})") from None
    return True


LOCK = ".camlens.lock"  # held (flock) by the run writing into the folder; holds that run's pid


def lock_output_dir(out: Path) -> Callable[[], None]:
    """Take ``out``'s run lock (creating ``out`` if needed) or raise :class:`UsageError` naming the run holding it.

    Returns the release: it drops the lock, removes the lock file, and ``out`` too if this call created it
    and it is still empty. A lock left by a process that died is free (the system drops it with the process).
    """
    created = make_dir(out)

    def remove_if_created() -> None:
        if created and not any(out.iterdir()):
            out.rmdir()

    try:
        import fcntl
    except ImportError:  # no flock (Windows): runs are not told apart
        return remove_if_created
    path = out / LOCK
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise UsageError(_in_use(out, holder)) from None
        except OSError:  # a file system without locks (some network mounts): run unlocked
            os.close(fd)
            return remove_if_created
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino  # not a file another run removed meanwhile
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)

    def release() -> None:
        try:
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)
        remove_if_created()

    return release


def check_output_free(out: Path) -> None:
    """Raise :func:`lock_output_dir`'s :class:`UsageError` now if another run holds ``out`` (takes nothing):
    the CLI asks before it loads a model; the run itself then takes the lock."""
    try:
        import fcntl

        fd = os.open(out / LOCK, os.O_RDONLY)
    except (ImportError, OSError):
        return  # no lock file (or no folder, or no flock): free
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        raise UsageError(_in_use(out, holder)) from None
    except OSError:
        return
    finally:
        os.close(fd)


def _in_use(out: Path, holder: str) -> str:
    return f"another camlens run (pid {holder}) is writing into {out}: wait for it, or choose another --output-dir"


def write_staged(out: Path, write: Callable[[Path], list[str]]) -> list[str]:
    """Run ``write(folder)`` into a staging folder beside ``out`` and move the files it names into ``out``
    only when it succeeded; the staging folder is removed whatever happens (no partial output).

    Returns what ``write`` returned (its file names, and anything else it puts first)."""
    import shutil

    parent = out
    while not parent.exists():
        parent = parent.parent
    staging = Path(tempfile.mkdtemp(prefix=".camlens-", dir=parent))
    try:
        returned = write(staging)
        out.mkdir(parents=True, exist_ok=True)
        for name in returned:
            if (staging / name).is_file():
                os.replace(staging / name, out / name)
        return returned
    finally:
        shutil.rmtree(staging, ignore_errors=True)
