"""Other programs' file formats, both ways: diffusers model folders (export and import) and
TorchScript / ONNX graphs of a network.

- :mod:`.diffusers_unet`: pixdiff's U-Net as diffusers' ``UNet2DModel``, config and weights.
- :mod:`.diffusers_scheduler`: a pixdiff schedule and prediction type as a diffusers scheduler
  config (betas, ``prediction_type``, ``timestep_spacing``, ``clip_sample``), and back.
- :mod:`.diffusers_export`: ``pixdiff export RUN --to diffusers DIR``.
- :mod:`.diffusers_import`: reading a diffusers folder as a model (``pixdiff sample DIR``,
  ``pixdiff.load(DIR)``) or into a run directory (``pixdiff import``).
- :mod:`.diffusers_model`: the diffusers model class written beside a network that has no
  ``UNet2DModel`` counterpart.
- :mod:`.graphs`: ``--to torchscript`` and ``--to onnx``.

Nothing here needs diffusers installed except loading a folder whose network only diffusers
can build; docs/interop.md shows the load code for each exported folder.
"""
