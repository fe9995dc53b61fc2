"""Pure: the site's planned power. One formula (``model``) for the scheduler, the mining budget,
the operator's views, metrics and the replay."""
