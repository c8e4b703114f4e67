"""Transfer learning: pretrained weights (``pretrained``), the starting model of a run (``build``) and the
strategies that decide what trains when (``strategy``)."""
