"""State machines and view models of the console: plain Python over ``console.api``, so
tests drive them without a browser and the ipywidgets views in ``console.widgets`` only
draw them and forward clicks."""
