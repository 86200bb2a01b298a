"""Client profiles: load a client's `ClientProfile` block by name, with a useful error."""

from __future__ import annotations

from prefect import task

from brandforge.blocks.client_profile import ClientProfile, foreign_block_error
from pydantic import ValidationError

from brandforge.models import InvalidInput, describe_validation_error
from brandforge.tasks.postprocess.chain import ChainContext, prepare_chain


def describe_profile_error(client: str, exc: ValidationError) -> str:
    """Each problem of a saved profile, a recipe's named by the recipe (its name read from the saved data)."""
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as api:
            data = api.read_block_document_by_name(name=client, block_type_slug=ClientProfile.get_block_type_slug()).data
        names = [r.get("name") if isinstance(r, dict) else None for r in data.get("recipes") or []]
    except Exception:  # noqa: BLE001 - the names only improve the message
        names = []
    parts = []
    for err in exc.errors():
        loc = list(err.get("loc", ()))
        prefix = ""
        if len(loc) >= 2 and loc[0] == "recipes" and isinstance(loc[1], int) and loc[1] < len(names) and names[loc[1]]:
            prefix, loc = f"recipe {names[loc[1]]!r}: ", loc[2:]
        field = ".".join(str(p) for p in loc)
        msg = err.get("msg", "").removeprefix("Value error, ")
        if field and not msg.startswith(field.split(".")[-1]):
            msg = f"{field}: {msg}"
        parts.append(prefix + msg)
    return "; ".join(parts) or describe_validation_error(exc)


def load_profile(client: str) -> ClientProfile:
    """The saved ClientProfile block named `client`, checked to use only its own or shared blocks.

    The error for an unknown client names no other client: whoever triggers a run (an event, a
    webhook) learns nothing about who else is served here."""
    try:
        profile = ClientProfile.load(client)
    except ValidationError as exc:  # a saved profile that no longer validates (e.g. a recipe's negative seed)
        raise InvalidInput(f"ClientProfile block {client!r} is invalid: {describe_validation_error(exc)}") from exc
    except RuntimeError as exc:  # Prefect wraps the ValidationError ("… due to failed validation")
        if not isinstance(exc.__cause__, ValidationError):
            raise
        raise InvalidInput(f"ClientProfile block {client!r} is invalid: {describe_profile_error(client, exc.__cause__)} "
                           "(fix it in the Prefect UI: Blocks → Brandforge Client Profile)") from exc
    except ValueError as exc:
        raise InvalidInput(f"unknown client {client!r}: no ClientProfile block of that name "
                           f"(save one as block type {ClientProfile.get_block_type_slug()!r}, name {client!r})") from exc
    if profile.client_id != client:
        raise InvalidInput(f"ClientProfile block {client!r} holds client_id {profile.client_id!r}; they must match")
    if foreign := profile.foreign_blocks():
        raise InvalidInput(foreign_block_error(client, foreign[0], f"client profile {client!r}"))
    return profile


def check_templates(profile: ClientProfile) -> None:
    """The prompt templates load and compile; pinned versions and the templates rules name exist."""
    from brandforge.tasks.prompt import profile_templates
    from brandforge.tasks.templates import compiled

    templates = profile_templates(profile)
    if templates is None:
        if "{{" in profile.prompt_template or "{%" in profile.prompt_template:
            compiled(profile.prompt_template, "prompt_template")
        return
    for name, version in profile.template_pins.items():
        if version not in templates.versions(name):
            raise InvalidInput(f"template_pins: template {name!r} has no version {version} in {profile.prompt_templates} "
                               f"(versions: {templates.versions(name) or 'none: unknown template'})")
    for i, rule in enumerate(profile.routing):
        if rule.template:
            name, _, version = rule.template.partition("@")
            if name not in templates.names() or (version.isdigit() and int(version) not in templates.versions(name)):
                raise InvalidInput(f"routing rule {rule.label(i)}: template {rule.template!r} is not in {profile.prompt_templates}")


@task(name="check-profile")
def check_profile(profile: ClientProfile) -> None:
    """Everything about a profile that can be checked before any image is touched."""
    check_templates(profile)
    for recipe in profile.recipes:
        # The chain with the profile's context: unknown steps, bad fields, and a missing logo,
        # palette, refiner or signer all fail here, before any image.
        ctx = ChainContext(seed=0, client=profile.client_id, palette=tuple(profile.palette), logo_path=profile.logo_path,
                           output_format=recipe.output_format, refiner=profile.refiner, c2pa_signer=profile.c2pa_signer)
        try:
            prepare_chain(recipe.chain, ctx)
        except InvalidInput as exc:
            raise InvalidInput(f"recipe {recipe.name!r}: {exc}") from exc
        try:
            # The same validation every request goes through (tasks/prompt.py make_request).
            recipe.generation_request(source_image="file:///profile-check",
                                      prompt=recipe.style or profile.default_style or "check")
        except ValidationError as exc:
            raise InvalidInput(f"recipe {recipe.name!r}: {describe_validation_error(exc)}") from exc
