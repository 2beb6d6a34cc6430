"""What the project ships besides the generation core: the bundled procedural world (objects
defined by signed distance functions and their ground-truth renders and meshes, `world`), the
training of the bundled pixel-space prior on that world and its shipped weights (`prior`,
`prior_weights/`), and the evaluation of priors and generated assets against the world's ground
truth (`evaluation`). It lives outside `framework/` so that the core knows no procedural world:
scripts and tests import it, `framework/` never does."""
