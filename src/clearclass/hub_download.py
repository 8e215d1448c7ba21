"""Models on the Hugging Face Hub: `hf-hub:OWNER/NAME` as a local folder, through its cache.

`bundle.bundle_folder` sends every model reference that starts with `hf-hub:` here, so
`clearclass.load`, `clearclass predict` and `clearclass serve` take one wherever they take a
model folder. The repository's bundle files are fetched once into the Hugging Face cache
(`huggingface_hub.snapshot_download`, the cache every Hugging Face library shares, found
through HF_HOME or HF_HUB_CACHE); afterwards they are read from there, offline too
(HF_HUB_OFFLINE=1, or no network: huggingface_hub then falls back to the cached snapshot).

A low layer: it imports nothing of clearclass but its errors, and huggingface_hub only when
a Hub model is asked for, so that a user who never names one needs no `hub` extra.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

from clearclass.errors import HubError

HUB_PREFIX = "hf-hub:"
INSTALL = "pip install 'clearclass[hub]'"


def is_hub_reference(model: object) -> bool:
    """Whether `model` names a model on the Hub (`hf-hub:OWNER/NAME`), not a local path.

    A pathlib.Path never is: Path would have changed the reference (`hf-hub:a//b`), and
    a folder named `hf-hub:x` is a folder.
    """
    return isinstance(model, str) and model.startswith(HUB_PREFIX)


def split_reference(reference: str) -> tuple[str, str | None]:
    """(repo_id, revision) of `hf-hub:OWNER/NAME[@REVISION]`, the repo id checked."""
    repo_id, _, revision = reference[len(HUB_PREFIX):].strip().partition("@")
    check_repo_id(repo_id, reference)
    return repo_id, revision or None


def check_repo_id(repo_id: str, given: str | None = None) -> str:
    """`repo_id` when it is a valid OWNER/NAME; a one-line HubError otherwise. The owner is
    required: a bare NAME would go to whichever account the token belongs to."""
    hub = hub_library()
    shown = given if given is not None else repo_id
    problem = None
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        problem = "it must be OWNER/NAME, one slash between the account and the model's name"
    else:
        try:
            hub.utils.validate_repo_id(repo_id)
        except hub.errors.HFValidationError as e:
            problem = str(e).splitlines()[0].rstrip(".")
    if problem:
        raise HubError(f"{shown!r} is not a Hugging Face model name ({problem}). Give OWNER/"
                       "NAME, such as you/dog-breeds: letters, digits, '-', '_' and '.'.")
    return repo_id


def hub_snapshot(reference: str, files: Iterable[str]) -> Path:
    """The local folder of `hf-hub:OWNER/NAME[@REVISION]`'s `files`, fetched into the Hugging
    Face cache the first time, read from it afterwards (offline too). One-line HubError
    otherwise, saying what to do."""
    hub = hub_library()
    repo_id, revision = split_reference(reference)
    errors = hub.errors
    cache = hub.constants.HF_HUB_CACHE
    try:
        folder = hub.snapshot_download(repo_id, revision=revision, repo_type="model",
                                       allow_patterns=list(files))
    except errors.GatedRepoError:
        raise HubError(f"{repo_id} on the Hugging Face Hub is gated: accept its conditions on "
                       f"https://huggingface.co/{repo_id}, then log in (hf auth login, or set "
                       "HF_TOKEN).") from None
    except errors.RepositoryNotFoundError:
        raise HubError(f"No model {repo_id} on the Hugging Face Hub, or it is private: check "
                       "the name, or log in with an account that may read it (hf auth login, "
                       "or set HF_TOKEN).") from None
    except errors.RevisionNotFoundError:
        raise HubError(f"{repo_id} on the Hugging Face Hub has no revision {revision!r}; give "
                       f"hf-hub:{repo_id} for its main branch.") from None
    except errors.LocalEntryNotFoundError:
        # Offline, or the Hub unreachable, and nothing in the cache to fall back on.
        offline = getattr(hub.constants, "is_offline_mode", lambda: hub.constants.HF_HUB_OFFLINE)
        if offline():
            raise HubError(f"{reference} is not in the Hugging Face cache ({cache}) and "
                           "HF_HUB_OFFLINE is set: connect to the internet once and unset "
                           "HF_HUB_OFFLINE to fetch it (it is then cached), or point HF_HOME "
                           "to the cache that holds it.") from None
        raise HubError(f"{reference} is not in the Hugging Face cache ({cache}) and "
                       f"{hub.constants.ENDPOINT} cannot be reached: connect to the internet "
                       "once to fetch it.") from None
    except errors.HfHubHTTPError as e:
        raise HubError(f"The Hugging Face Hub refused to send {repo_id} ({_first_line(e)}). "
                       "Retry later, or check the name and your token (hf auth login).") \
            from None
    return Path(folder)


def hub_library() -> ModuleType:
    """huggingface_hub, imported when a Hub model is first asked for; a one-line error
    saying how to install it when it is missing."""
    try:
        import huggingface_hub
        import huggingface_hub.constants
        import huggingface_hub.errors
        import huggingface_hub.utils
    except ImportError:
        raise HubError("Models on the Hugging Face Hub need the huggingface_hub package: "
                       f"{INSTALL}.") from None
    return huggingface_hub


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    line = lines[0] if lines else type(error).__name__
    return line if len(line) <= 200 else line[:197] + "..."
