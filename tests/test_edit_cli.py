"""``var-fast edit``: the same edit as the Python API, input fitting, masks as PNGs, clear errors."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

import var_fast
from model_factory import make_models, save_pair
from var_fast.cli import main
from var_fast.default_model import default_checkpoints
from var_fast.editing import inpaint_mask, load_image, mask_from_image, outpaint_mask

COMMON = ["--backend", "reference", "--device", "cpu", "--cfg", "2", "--top-k", "10", "--top-p", "0.9", "--seed", "3"]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    var, vae = make_models("d2")
    return save_pair(var, vae, str(tmp_path_factory.mktemp("cli_edit")))


@pytest.fixture(scope="module")
def sampler(ckpts):
    return var_fast.load(*ckpts, device="cpu", backend="reference")


@pytest.fixture
def wide_image(tmp_path):
    """An 80x48 RGB image: the CLI resizes it to 107x64 and center-crops 64x64."""
    path = tmp_path / "in.png"
    pixels = np.random.RandomState(0).randint(0, 256, size=(48, 80, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _png(path) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1).float() / 255


def _api_edit(sampler, image_path, mask, label=None):
    x, _ = load_image(image_path, 64)
    out = sampler.edit(x[None], mask, label, cfg=2.0, top_k=10, top_p=0.9, seed=3)[0]
    return out.clamp(0, 1).mul(255).round().div(255)


@pytest.mark.parametrize("outpaint", [False, True])
def test_box_edit_is_the_api_edit(ckpts, sampler, wide_image, tmp_path, capsys, outpaint):
    out = tmp_path / "out" / "edited.png"
    rc = main(["edit", "--var", ckpts[0], "--vae", ckpts[1], "--image", str(wide_image), "--box", "8", "16", "40", "48",
               "--out", str(out)] + (["--outpaint"] if outpaint else []) + COMMON)
    assert rc == 0
    err = capsys.readouterr().err
    assert "is 80x48: resized (shorter side to 64) and center-cropped to 64x64" in err and "wrote" in err
    mask = (outpaint_mask if outpaint else inpaint_mask)(64, 8, 16, 40, 48)
    assert torch.equal(_png(out), _api_edit(sampler, wide_image, mask))


def test_mask_png_white_keeps(ckpts, sampler, wide_image, tmp_path):
    mask_png = tmp_path / "mask.png"
    mask = np.full((48, 80), 255, dtype=np.uint8)
    mask[10:40, 20:60] = 0
    Image.fromarray(mask).save(mask_png)
    out = tmp_path / "edited.png"
    assert main(["edit", "--var", ckpts[0], "--vae", ckpts[1], "--image", str(wide_image), "--mask", str(mask_png),
                 "--class", "4", "--out", str(out)] + COMMON) == 0
    expected = _api_edit(sampler, wide_image, mask_from_image(mask_png, 64), 4)
    assert torch.equal(_png(out), expected)


def test_mask_png_on_the_token_grid(ckpts, sampler, wide_image, tmp_path):
    mask_png = tmp_path / "grid.png"
    grid = np.full((4, 4), 255, dtype=np.uint8)
    grid[1:3, 1:3] = 0
    Image.fromarray(grid).save(mask_png)
    out = tmp_path / "edited.png"
    assert main(["edit", "--var", ckpts[0], "--vae", ckpts[1], "--image", str(wide_image), "--mask", str(mask_png),
                 "--out", str(out)] + COMMON) == 0
    assert torch.equal(_png(out), _api_edit(sampler, wide_image, torch.from_numpy(grid).float() / 255))


def test_edit_is_reproducible(ckpts, wide_image, tmp_path):
    for name in ("a.png", "b.png"):
        assert main(["edit", "--var", ckpts[0], "--vae", ckpts[1], "--image", str(wide_image), "--box", "0", "0", "32",
                     "64", "--out", str(tmp_path / name), "--device", "cpu"]) == 0
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


@pytest.mark.parametrize("extra,message", [
    (["--box", "0", "0", "70", "10"], "box (y0=0, x0=0, y1=70, x1=10) must satisfy"),
    (["--box", "0", "0", "64", "64", "--outpaint"], "nothing to generate"),
    (["--box", "0", "0", "8", "8", "--class", "11"], "label 11 is out of range"),
    (["--mask", "MASK", "--outpaint"], "--outpaint needs --box"),
    (["--mask", "SMALL"], "--mask is 10x10: it must have the input image's size (80x48) or the token grid's (4x4)"),
    (["--mask", "MISSING"], "cannot read --mask"),
])
def test_bad_arguments(ckpts, wide_image, tmp_path, capsys, extra, message):
    Image.new("L", (80, 48), 255).save(tmp_path / "mask.png")
    Image.new("L", (10, 10), 255).save(tmp_path / "small.png")
    names = {"MASK": str(tmp_path / "mask.png"), "SMALL": str(tmp_path / "small.png"),
             "MISSING": str(tmp_path / "missing.png")}
    extra = [names.get(a, a) for a in extra]
    rc = main(["edit", "--var", ckpts[0], "--vae", ckpts[1], "--image", str(wide_image), "--out",
               str(tmp_path / "o.png")] + extra + COMMON)
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_missing_image(ckpts, tmp_path, capsys):
    rc = main(["edit", "--var", ckpts[0], "--vae", ckpts[1], "--image", str(tmp_path / "nope.png"), "--box", "0", "0",
               "8", "8", "--out", str(tmp_path / "o.png")] + COMMON)
    assert rc == 2 and "cannot read --image" in capsys.readouterr().err


def test_bundled_default_model(wide_image, tmp_path, capsys):
    try:
        default_checkpoints()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    out = tmp_path / "edited.png"
    assert main(["edit", "--image", str(wide_image), "--box", "16", "16", "48", "48", "--out", str(out),
                 "--device", "cpu"]) == 0
    assert "using the bundled default model" in capsys.readouterr().err
    assert Image.open(out).size == (64, 64)


@pytest.fixture
def no_model_load(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")
    monkeypatch.setattr(var_fast, "load", fail)


def test_out_is_an_existing_folder(ckpts, wide_image, tmp_path, capsys, no_model_load):
    folder = tmp_path / "edits"
    folder.mkdir()
    rc = main(["edit", "--var", ckpts[0], "--vae", ckpts[1], "--image", str(wide_image), "--box", "0", "0", "8", "8",
               "--out", str(folder)] + COMMON)
    assert rc == 2
    assert f"--out {folder} is an existing folder; it must be a file name" in capsys.readouterr().err
    assert os.listdir(folder) == [] and not (tmp_path / "edits.tmp").exists()


def test_save_png_leaves_no_temporary_file(tmp_path):
    from var_fast.cli.common import save_png
    (tmp_path / "dir").mkdir()
    with pytest.raises(OSError):
        save_png(torch.zeros(3, 4, 4), str(tmp_path / "dir"))
    assert sorted(os.listdir(tmp_path)) == ["dir"]


@pytest.mark.parametrize("extra,message", [
    (["--seed", "-1"], "0 <= seed < 2**63"),
    (["--seed", str(2**64)], "0 <= seed < 2**63"),
])
def test_seed_out_of_range(ckpts, wide_image, tmp_path, capsys, no_model_load, extra, message):
    with pytest.raises(SystemExit):
        main(["edit", "--var", ckpts[0], "--vae", ckpts[1], "--image", str(wide_image), "--box", "0", "0", "8", "8",
              "--out", str(tmp_path / "o.png")] + extra)
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("extra,message", [
    (["--cfg", "-2"], "cfg must be a finite number >= 0"),
    (["--top-p", "2"], "top_p must be in"),
    (["--top-k", "-5"], "top_k must be"),
    (["--mask", "m.png", "--outpaint"], "--outpaint needs --box"),
])
def test_flags_are_checked_before_loading(ckpts, wide_image, tmp_path, capsys, no_model_load, extra, message):
    where = [] if "--mask" in extra else ["--box", "0", "0", "8", "8"]
    rc = main(["edit", "--var", ckpts[0], "--vae", ckpts[1], "--image", str(wide_image), "--out",
               str(tmp_path / "o.png")] + where + extra)
    assert rc == 2 and message in capsys.readouterr().err


# ---- --out: the suffix names the format -------------------------------------------------------------------
@pytest.mark.parametrize("name,pil_format,magic", [("edited.jpg", "JPEG", b"\xff\xd8\xff"),
                                                   ("edited.JPEG", "JPEG", b"\xff\xd8\xff"),
                                                   ("edited.bmp", "BMP", b"BM")])
def test_out_suffix_names_the_format(ckpts, sampler, wide_image, tmp_path, name, pil_format, magic):
    out = tmp_path / name
    assert main(["edit", "--var", ckpts[0], "--vae", ckpts[1], "--image", str(wide_image), "--box", "8", "16", "40",
                 "48", "--out", str(out)] + COMMON) == 0
    assert out.read_bytes().startswith(magic)
    with Image.open(out) as img:
        assert img.format == pil_format and img.size == (64, 64)
    # the API's edit, written by Pillow in that format (JPEG at quality 95), read back: the same pixels
    import io
    expected = _api_edit(sampler, wide_image, inpaint_mask(64, 8, 16, 40, 48))
    buffer = io.BytesIO()
    Image.fromarray(expected.mul(255).round().byte().permute(1, 2, 0).numpy()).save(
        buffer, format=pil_format, **({"quality": 95} if pil_format == "JPEG" else {}))
    assert torch.equal(_png(out), _png(buffer))
    assert sorted(os.listdir(tmp_path)) == sorted(["in.png", name])


@pytest.mark.parametrize("name", ["edited.gif", "edited", "edited.png.bak"])
def test_unknown_out_suffix_is_refused_before_loading(ckpts, wide_image, tmp_path, capsys, no_model_load, name):
    rc = main(["edit", "--var", ckpts[0], "--vae", ckpts[1], "--image", str(wide_image), "--box", "0", "0", "8", "8",
               "--out", str(tmp_path / name)] + COMMON)
    assert rc == 2
    err = capsys.readouterr().err
    assert "its suffix names the image format written; use one of .png, .jpg, .jpeg" in err
    assert not (tmp_path / name).exists()
