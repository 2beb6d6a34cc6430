"""Generation methods that need their own step logic (LightningModule subclasses of
`framework.system.GenerationSystem`). DreamFusion needs none: `conf/experiment/dreamfusion.yaml`
composes the base system."""
