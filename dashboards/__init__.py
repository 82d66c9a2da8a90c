"""TensorBoard writer, dashboard layout and static report (installed as ``nnhealth.dashboards``).

Writing (the Monitor's TensorBoard sink): :mod:`.tensorboard` queues each step
for :mod:`.background`'s writer thread, which builds :mod:`.protos` under the
tag names of :mod:`.tags` into an :mod:`.event_file`, with the Custom Scalars
page of :mod:`.layout` and the findings table of :mod:`.markdown`.

Reading (``nnhealth report``): :mod:`.run_data` reads a log folder back,
:mod:`.figures` draws the panels (histograms through :mod:`.rebin`),
:mod:`.report` writes the HTML page or the PNG files.

Tooling: :mod:`.browser` drives a real TensorBoard server and headless
Chromium for the tests, :mod:`.screenshots` makes the README's pictures.
The log folder's layout is documented in docs/logdir.md.
"""
