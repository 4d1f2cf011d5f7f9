"""The ILO reading workflow without Qt or torch: the classification (``ilo``), readers, blinding and
the final-determination rule (``rules``), agreement statistics (``agreement``), storage
(``repository``) and printable reports (``pdf``)."""
