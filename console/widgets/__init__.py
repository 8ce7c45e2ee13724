"""ipywidgets views over ``console.models``: each view draws its model and forwards
clicks to it; no decision is taken here."""
