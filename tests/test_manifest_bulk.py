"""Bulk jobs: glob, folder and prompt x image matrix expansion, and their ids."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from PIL import Image

from batch.errors import ManifestError
from batch.manifest.bulk import image_keys, sanitize
from batch.manifest.load import load_manifest


def make(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.new("RGB", (8, 8), "blue").save(folder / name)


def write(tmp: Path, body: str) -> Path:
    path = tmp / "m.yaml"
    path.write_text(textwrap.dedent(body).lstrip("\n"), encoding="utf-8")
    return path


def test_glob_expands_sorted_with_entry_params(tmp_path: Path) -> None:
    """`images: glob` gives one item per match, sorted, ids `<id>-<stem>`, shared params."""
    make(tmp_path / "photos", "b.jpg", "a.jpg", "c.png")
    path = write(
        tmp_path, "jobs:\n  - {id: products, prompt: P, images: 'photos/*.jpg', seed: 3}\n"
    )
    items = load_manifest(path).items
    assert [i.id for i in items] == ["products-a", "products-b"]
    assert all(i.params["seed"] == 3 and i.prompt == "P" for i in items)
    assert items[0].references[0].value == str(tmp_path / "photos" / "a.jpg")


def test_folder_forms_and_extra_references(tmp_path: Path) -> None:
    """A folder (string or {folder}) takes image files only; job references follow the image."""
    make(tmp_path / "pics", "x.png", "y.webp")
    (tmp_path / "pics" / "readme.txt").write_text("skip me")
    make(tmp_path, "style.png")
    for spec in ("pics", "{folder: pics}", "{glob: 'pics/*.*p*'}"):
        path = write(
            tmp_path,
            f"jobs:\n  - {{id: s, prompt: P, images: {spec}, referenceImages: [style.png]}}\n",
        )
        items = load_manifest(path).items
        assert [i.id for i in items] == ["s-x", "s-y"], spec
        assert [r.value for r in items[0].references] == [
            str(tmp_path / "pics" / "x.png"),
            str(tmp_path / "style.png"),
        ]


def test_matrix_ids_and_per_prompt_params(tmp_path: Path) -> None:
    """A matrix gives `<id>-<prompt id>-<stem>`; prompt ids default to p1..; prompt params win."""
    make(tmp_path / "img", "cat.png", "dog.png")
    path = write(
        tmp_path,
        """
        jobs:
          - id: styles
            images: img/*.png
            seed: 1
            prompts:
              - {id: wc, prompt: watercolor}
              - {prompt: ink, seed: 7}
        """,
    )
    items = load_manifest(path).items
    assert [i.id for i in items] == [
        "styles-wc-cat",
        "styles-wc-dog",
        "styles-p2-cat",
        "styles-p2-dog",
    ]
    assert [i.params["seed"] for i in items] == [1, 1, 7, 7]
    assert items[2].prompt == "ink"


def test_prompts_without_images(tmp_path: Path) -> None:
    """`prompts` alone over fixed references gives `<id>-<prompt id>`."""
    path = write(
        tmp_path,
        "jobs:\n  - {id: j, referenceImages: [asset_a],\n"
        "     prompts: [{id: a, prompt: A}, {id: b, prompt: B}]}\n",
    )
    assert [i.id for i in load_manifest(path).items] == ["j-a", "j-b"]


def test_unnamed_bulk_gets_stable_derived_ids(tmp_path: Path) -> None:
    """A bulk job without id derives `<stem>-<hash>` ids, equal across loads."""
    make(tmp_path / "img", "cat.png", "dog.png")
    path = write(tmp_path, "jobs:\n  - {prompt: P, images: img}\n")
    ids = [i.id for i in load_manifest(path).items]
    assert [i.split("-")[0] for i in ids] == ["cat", "dog"]
    assert ids == [i.id for i in load_manifest(path).items]


def test_colliding_stems_are_disambiguated_stably(tmp_path: Path) -> None:
    """Same stem with different suffixes keeps the suffix; same name in two folders adds a hash."""
    make(tmp_path / "a", "cat.png", "cat.jpg", "dog.png")
    make(tmp_path / "b", "dog.png")
    path = write(tmp_path, "jobs:\n  - {id: j, prompt: P, images: '**/*.*g'}\n")
    ids = [i.id for i in load_manifest(path).items]
    assert ids[:2] == ["j-cat.jpg", "j-cat.png"]
    assert ids[2].startswith("j-dog.png-") and ids[3].startswith("j-dog.png-") and ids[2] != ids[3]
    assert ids == [i.id for i in load_manifest(path).items]


def test_sanitize_and_keys() -> None:
    """Stems become safe id fragments: ASCII, no separators, no leading dots, bounded length."""
    assert sanitize("Café au lait (1)") == "Cafe_au_lait_1"
    assert sanitize("../..") == "img" and sanitize(".hidden") == "hidden"
    assert len(sanitize("x" * 500)) == 64
    assert image_keys(["/r/Cat.png", "/r/cat.jpg"], "/r") == ["Cat.png", "cat.jpg"]


@pytest.mark.parametrize(
    ("spec", "where", "message"),
    [
        ("'none/*.png'", "jobs[0] (j).images", "glob 'none/*.png' matches no image files"),
        ("{folder: nowhere}", "jobs[0] (j).images", "folder 'nowhere' does not exist"),
        ("{glob: a, folder: b}", "jobs[0] (j).images", "exactly one of 'glob' or 'folder'"),
        ("{}", "jobs[0] (j).images", "exactly one of 'glob' or 'folder'"),
        ("{globb: x}", "jobs[0] (j).images.globb", "did you mean 'glob'?"),
        ("[a, b]", "jobs[0] (j).images", "must be a glob or folder"),
    ],
)
def test_bulk_errors(tmp_path: Path, spec: str, where: str, message: str) -> None:
    """Bad or empty image sets are located errors."""
    path = write(tmp_path, f"jobs:\n  - id: j\n    prompt: P\n    images: {spec}\n")
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    (problem,) = info.value.problems
    assert (problem.where, problem.line) == (where, 4) and message in problem.message, problem


def test_bulk_bad_image_and_reference_count(tmp_path: Path) -> None:
    """An unreadable matched file and a bulk image plus 4 references are both reported."""
    make(tmp_path / "img", "ok.png")
    (tmp_path / "img" / "bad.png").write_bytes(b"not a png")
    path = write(
        tmp_path,
        "jobs:\n  - {id: j, prompt: P, images: img,\n"
        "     referenceImages: [asset_a, asset_b, asset_c, asset_d]}\n",
    )
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    messages = [p.message for p in info.value.problems]
    assert any("not a readable image" in m for m in messages)
    assert any("at most 4 images including the bulk image, got 5" in m for m in messages)


def test_named_bulk_ids_collide_with_plain_ids(tmp_path: Path) -> None:
    """A generated id equal (ignoring case) to another job's id is an error, not renamed."""
    make(tmp_path / "img", "cat.png")
    path = write(
        tmp_path,
        "jobs:\n  - {id: p-CAT, prompt: P, referenceImages: [asset_a]}\n"
        "  - {id: p, prompt: P, images: img}\n",
    )
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    (problem,) = info.value.problems
    assert problem.line == 3 and "differs only in case" in problem.message


def test_duplicate_prompt_ids(tmp_path: Path) -> None:
    """Two prompts with one id in a matrix are an error at the second."""
    path = write(
        tmp_path,
        "jobs:\n  - id: j\n    referenceImages: [asset_a]\n    prompts:\n"
        "      - {id: a, prompt: A}\n      - {id: a, prompt: B}\n",
    )
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert ("jobs[0] (j).prompts[1].id", 6) in [(p.where, p.line) for p in info.value.problems]
