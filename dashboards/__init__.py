"""TensorBoard writer, dashboard layout and static report (installed as ``nnhealth.dashboards``)."""
